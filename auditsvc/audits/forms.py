"""Portal forms: parse and validate input shapes; the services validate content."""

from django import forms

from . import selectors


class ModelVersionForm(forms.Form):
    file = forms.FileField(label="Model file", help_text="model.pt2 (torch.export) or TorchScript .pt / .ts")
    meta = forms.FileField(label="model.json", help_text="name, version, classes and input size, mean, std")
    release_tag = forms.CharField(required=False, max_length=200, help_text="optional, e.g. v1.4.0-rc2")


class ProbeSetForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(label="Probe set (.zip)", help_text="one folder per class; optional manifest.csv")


class AuditForm(forms.Form):
    model_version = forms.ModelChoiceField(queryset=None, label="Model version")
    probe_set = forms.ModelChoiceField(queryset=None, label="Probe set")
    reference = forms.ModelChoiceField(queryset=None, required=False, label="Reference model (optional)")
    seed = forms.IntegerField(initial=0, min_value=0, max_value=2**31 - 1)

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        versions = selectors.model_versions_for(user)
        self.fields["model_version"].queryset = versions
        self.fields["reference"].queryset = versions
        self.fields["probe_set"].queryset = selectors.probe_sets_for(user)


class ScheduleForm(forms.Form):
    model_version = forms.ModelChoiceField(queryset=None, label="Model version")
    probe_set = forms.ModelChoiceField(queryset=None, label="Probe set")
    every_hours = forms.IntegerField(min_value=1, max_value=24 * 90, initial=24 * 7, label="Every (hours)")

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model_version"].queryset = selectors.model_versions_for(user)
        self.fields["probe_set"].queryset = selectors.probe_sets_for(user)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="what uses it, e.g. 'release pipeline'")
