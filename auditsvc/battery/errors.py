class BadInput(Exception):
    """A user-supplied model, metadata or dataset that cannot be audited.

    The message is one line meant for the user: what is wrong and, where possible,
    how to fix it. Command line: exit 2. Portal and API: a validation error.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))
