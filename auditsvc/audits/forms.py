"""Portal and API forms: parse and validate input shapes; the services validate content.

Numbers and ids are ASCII digits only (Python's int() also takes '٣', '３', '1_000'), ids fit a
64-bit column, seeds are 0..2**32-1, and text fits its database column.
"""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError
from django.db import models

from . import selectors
from .services import parse_meta
from .models import ApiToken, Audit, ModelVersion, ProbeSet

MAX_ID = 2**63 - 1
MAX_SEED = Audit.MAX_SEED
_ID = re.compile(r"[0-9]{1,19}")
_INTEGER = re.compile(r"\s*(-?)([0-9]+)\s*", re.ASCII)
_BEYOND = 10**40   # stands for any longer number: past every range, and int() is never asked for 5000 digits


def column_length(model, field: str) -> int:
    return model._meta.get_field(field).max_length


def _shown(value) -> str:
    text = repr(str(value))
    return text if len(text) <= 40 else text[:37] + "...'"


def parse_id(value) -> int | None:
    """An id from a request: ASCII digits, 1..2**63-1; anything else is None."""
    text = str(value) if value is not None else ""
    if not _ID.fullmatch(text):
        return None
    number = int(text)
    return number if 0 < number <= MAX_ID else None


class IntegerField(forms.IntegerField):
    """forms.IntegerField taking ASCII digits only."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        match = _INTEGER.fullmatch(str(value))
        if not match:
            raise ValidationError(f"{_shown(value)} is not a whole number in ASCII digits.", code="invalid")
        sign, digits = match.groups()
        number = int(digits) if len(digits) <= 40 else _BEYOND
        return -number if sign else number


class SeedField(IntegerField):
    def __init__(self, **kwargs):
        kwargs.setdefault("initial", 0)
        super().__init__(min_value=0, max_value=MAX_SEED,
                         error_messages={"min_value": f"The seed must be between 0 and {MAX_SEED}.",
                                         "max_value": f"The seed must be between 0 and {MAX_SEED}."},
                         **kwargs)


class IdChoiceField(forms.ModelChoiceField):
    """A choice among the user's (or the token's organization's) objects by id; a malformed id is refused
    before any query, one of another organization is reported as not existing."""

    def __init__(self, queryset=None, *, kind: str, **kwargs):
        super().__init__(queryset, **kwargs)
        self.kind = kind
        self.error_messages["invalid_choice"] = f"There is no {kind} %(value)s in this organization."

    def to_python(self, value):
        if value not in self.empty_values and not isinstance(value, models.Model) and parse_id(value) is None:
            raise ValidationError(f"{_shown(value)} is not a {self.kind} id (1 to {MAX_ID} in ASCII digits).",
                                  code="invalid_id")
        return super().to_python(value)


class ModelVersionChoiceField(IdChoiceField):
    """A model version, labelled with its release tag: "pets 1.4 · release v1.4.0-rc2"."""

    def __init__(self, queryset=None, **kwargs):
        super().__init__(queryset, kind="model version", **kwargs)

    def label_from_instance(self, version: ModelVersion) -> str:
        return f"{version} · release {version.release_tag}" if version.release_tag else str(version)


# What each field is for, shown under it (the portal's help text; README.md says the same at length).
RELEASE_TAG_HELP = ("Optional: the release this model version ships in, in your own words (e.g. a git tag "
                    "v1.4.0-rc2). It is shown on audits, comparisons and the API, so that a verdict can be traced "
                    "to a release.")
MODEL_VERSION_HELP = "The uploaded model to audit; the release tag follows its name and version."
PROBE_SET_HELP = "Labelled images the audit runs the model on; its class folders must be among the model's classes."
REFERENCE_HELP = ("Optional: a second model version (e.g. the one in production, or a baseline) audited on the same "
                  "probe set, so that the report sets this model's accuracy and findings against it. Not the model "
                  "itself.")
SEED_HELP = ("Fixes the random choices of the audit (sampled images, baselines, random directions): the same seed on "
             "the same inputs gives the same report. Change it to check that a finding is not a chance result.")


class ModelVersionForm(forms.Form):
    file = forms.FileField(label="Model file", help_text="The trained model: model.pt2 from torch.export.save, a "
                                                         "TorchScript .pt / .ts file, model.keras from Keras 3's "
                                                         "model.save, or model.onnx (from TensorFlow and other "
                                                         "frameworks). It is loaded in a sandbox and run once on the "
                                                         "declared input before it is stored.")
    meta = forms.FileField(label="model.json", help_text="JSON describing the model: name, version, classes (in output "
                                                         "order), input size [channels, height, width], mean and std.")
    release_tag = forms.CharField(required=False, max_length=column_length(ModelVersion, "release_tag"),
                                  help_text=RELEASE_TAG_HELP)


class ProbeSetForm(forms.Form):
    name = forms.CharField(max_length=column_length(ProbeSet, "name"),
                           help_text="How the portal and the reports name this set, e.g. 'field photos 2025-05'.")
    file = forms.FileField(label="Probe set (.zip)",
                           help_text="A zip with one folder per class (folder names as in model.json's classes), "
                                     "images inside. Optional manifest.csv at the top: one row per image with columns "
                                     "path and label, any attribute columns (e.g. site, weather: accuracy is then "
                                     "reported per group, and shortcuts are looked for in them) and optional object "
                                     "boxes x0, y0, x1, y1 in pixels (to check where the model looks).")


def _preselect_the_only_choice(form, *names: str) -> None:
    """A choice with exactly one option (and nothing chosen yet) starts chosen."""
    for name in names:
        field = form.fields[name]
        if form.initial.get(name) in (None, "") and field.queryset.count() == 1:
            form.initial[name] = field.queryset.first().pk


PROFILE_HELP = ("Full: every section of the battery (saliency, occlusion, feature visualization, representation "
                "and explanation checks), the report a release is signed off on. Quick: the model summary, "
                "performance, shortcut probes and where the model looks, in a fraction of the time: a first look "
                "or a pipeline's check.")


class ProfileField(forms.ChoiceField):
    """A profile; full when none is given."""

    def __init__(self, **kwargs):
        super().__init__(choices=Audit.Profile.choices, initial=Audit.Profile.FULL, required=False, label="Profile",
                         help_text=PROFILE_HELP, **kwargs)

    def clean(self, value):
        return super().clean(value) or Audit.Profile.FULL


class PriorityField(forms.ChoiceField):
    """An API audit's priority; interactive when none is given (the portal's audits are interactive, the
    schedules' scheduled)."""

    def __init__(self, **kwargs):
        super().__init__(choices=Audit.Priority.choices, required=False, **kwargs)

    def clean(self, value):
        return super().clean(value) or Audit.Priority.INTERACTIVE


class AuditForm(forms.Form):
    model_version = ModelVersionChoiceField(label="Model version", help_text=MODEL_VERSION_HELP)
    probe_set = IdChoiceField(kind="probe set", label="Probe set", help_text=PROBE_SET_HELP)
    reference = ModelVersionChoiceField(required=False, label="Reference model (optional)", help_text=REFERENCE_HELP,
                                       empty_label="none (no comparison model)")
    profile = ProfileField()
    seed = SeedField(help_text=SEED_HELP)

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        versions = selectors.model_versions_for(user)
        self.fields["model_version"].queryset = versions
        self.fields["reference"].queryset = versions
        self.fields["probe_set"].queryset = selectors.probe_sets_for(user)
        _preselect_the_only_choice(self, "model_version", "probe_set")

    def clean(self):
        data = super().clean()
        if data.get("reference") and data.get("reference") == data.get("model_version"):
            self.add_error("reference", "A model version cannot be its own reference: choose another version (e.g. "
                                        "the one in production) or leave the reference empty.")
        return data

    def identity(self) -> dict:
        """What makes two audits the same (selectors.audit_find_identical), from the cleaned form."""
        return {key: self.cleaned_data.get(key) for key in ("model_version", "probe_set", "reference", "seed",
                                                             "profile")}


class ScheduleForm(forms.Form):
    model_version = ModelVersionChoiceField(label="Model version", help_text="The model version to re-audit.")
    probe_set = IdChoiceField(kind="probe set", label="Probe set", help_text=PROBE_SET_HELP)
    every_hours = IntegerField(min_value=1, max_value=24 * 90, initial=24 * 7, label="Every (hours)",
                               help_text="How often to re-audit, 1 to 2160 hours (168 is weekly). Each new report "
                                         "says what changed since the previous audit.")
    profile = ProfileField()

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model_version"].queryset = selectors.model_versions_for(user)
        self.fields["probe_set"].queryset = selectors.probe_sets_for(user)
        _preselect_the_only_choice(self, "model_version", "probe_set")


class TokenForm(forms.Form):
    name = forms.CharField(max_length=column_length(ApiToken, "name"),
                           help_text="What will use the token, e.g. 'release pipeline': the list shows it, so that "
                                     "you know which token to revoke.")


class AuditFilterForm(forms.Form):
    """The audit list's filters (GET); an empty field does not filter."""

    model = forms.ChoiceField(required=False, label="Model")
    release_tag = forms.ChoiceField(required=False, label="Release tag")
    verdict = forms.ChoiceField(required=False, label="Verdict",
                                choices=[("", "any"), ("pass", "pass"), ("warn", "warn"), ("fail", "fail")])
    status = forms.ChoiceField(required=False, label="Status", choices=[("", "any"), *Audit.Status.choices])

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [("", "any"), *((n, n) for n in selectors.model_names_for(user))]
        self.fields["release_tag"].choices = [("", "any"), *((t, t) for t in selectors.release_tags_for(user))]

    def filters(self) -> dict:
        """The valid filters; a value that is not among the choices is left out (and reported on the form)."""
        if not self.is_bound:
            return {}
        self.is_valid()
        return {name: value for name, value in getattr(self, "cleaned_data", {}).items() if value}


class ApiAuditForm(forms.Form):
    """POST /api/v1/audits: stored objects by id (of the token's organization) or uploaded files."""

    model = forms.FileField(required=False)
    meta = forms.FileField(required=False)            # or a text field of the same name (see clean)
    model_version = IdChoiceField(kind="model version", required=False)
    reference = forms.FileField(required=False)
    reference_meta = forms.FileField(required=False)
    reference_version = IdChoiceField(kind="model version", required=False)
    dataset = forms.FileField(required=False)
    dataset_name = forms.CharField(required=False, max_length=column_length(ProbeSet, "name"))
    probe_set = IdChoiceField(kind="probe set", required=False)
    release_tag = forms.CharField(required=False, max_length=column_length(ModelVersion, "release_tag"))
    seed = SeedField(required=False)
    profile = ProfileField()
    priority = PriorityField()

    def __init__(self, user, organization, *args, **kwargs):
        super().__init__(*args, **kwargs)
        versions = selectors.model_versions_for(user, organization)
        self.fields["model_version"].queryset = versions
        self.fields["reference_version"].queryset = versions
        self.fields["probe_set"].queryset = selectors.probe_sets_for(user, organization)

    def clean(self):
        data = super().clean()
        for field in ("meta", "reference_meta"):
            if not data.get(field) and self.data.get(field):   # model.json sent as a text field
                data[field] = self.data[field]
            if data.get(field):
                try:
                    data[field] = parse_meta(data[field])
                except ValidationError as error:
                    self.add_error(field, error.message_dict["meta"])
        if "model_version" in data and "model" in data and not (data["model_version"] or data["model"]):
            self.add_error("model", "Upload the model file as 'model' or give 'model_version'.")
        if data.get("model") and not data.get("meta") and "meta" not in self.errors:
            self.add_error("meta", "model.json is required with an uploaded model.")
        if data.get("reference") and not data.get("reference_meta") and "reference_meta" not in self.errors:
            self.add_error("reference_meta", "model.json of the reference is required with an uploaded reference.")
        if "probe_set" in data and "dataset" in data and not (data["probe_set"] or data["dataset"]):
            self.add_error("dataset", "Upload the probe set zip as 'dataset' or give 'probe_set'.")
        if data.get("seed") is None:
            data["seed"] = 0
        return data
