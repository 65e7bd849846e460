"""Hugging Face Hub helpers: finding a pipeline (a folder, an embedded pipeline's name or a Hub
repo id) and checking its folder is complete, model cards, and safetensors-only folder uploads.

Everything here except :func:`push_folder_to_hub` and a :func:`resolve_pipeline` of a Hub repo
that is not in the cache works offline. Cards are written with
``ModelCard.from_template`` and never ``validate()``-d (that needs the network).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

__all__ = [
    "CARD_TAGS",
    "FORBIDDEN_WEIGHT_SUFFIXES",
    "CARD_INPUTS",
    "EMBEDDED_ROOT",
    "HUB_KWARGS",
    "check_finite_weights",
    "check_pipeline_folder",
    "check_safetensors",
    "embedded_pipelines",
    "looks_local",
    "model_card",
    "pipeline_card",
    "push_folder_to_hub",
    "resolve_pipeline",
    "save_model_card",
]

CARD_TAGS = ["diffusers", "data-assimilation", "weather", "slams"]
#: Suffixes of pickle-based weights files; weights are safetensors only, these are refused.
FORBIDDEN_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: File in a pipeline folder holding the arguments of :func:`model_card` (JSON), so the card
#: can be rebuilt when evaluation results arrive.
CARD_INPUTS = "model_card.json"
#: Arguments of ``from_pretrained`` that go to ``snapshot_download`` for a Hub repo id.
HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only")
_PACKAGE = Path(__file__).resolve().parent
#: The folder of the embedded pretrained pipelines, one subfolder each: ``pipelines/`` of the
#: repository, which an installed wheel carries as ``slams_diffusers/embedded/`` and a source
#: checkout (or an editable install) has beside the package.
EMBEDDED_ROOT = (
    _PACKAGE / "embedded" if (_PACKAGE / "embedded").is_dir() else _PACKAGE.parent / "pipelines"
)

DEFAULT_INTENDED_USE = (
    "Research on score-based data assimilation: sampling ensembles of atmospheric states "
    "conditioned on a background and on sparse, noisy observations."
)
DEFAULT_LIMITATIONS = (
    "Trained on a limited data set and resolution; not an operational forecasting or "
    "analysis system. Posterior spread depends on the likelihood approximation and on the "
    "number of sampling steps and corrections; check calibration before relying on it."
)

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

## How to load

```python
import slams_diffusers  # noqa: F401  (makes SLAMSPipeline known to diffusers)
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{{ load_path }}")  # a SLAMSPipeline
```

`slams_diffusers.SLAMSPipeline.from_pretrained` loads it too. No code from the model folder is run.
{% if training_block %}
## Training configuration

```yaml
{{ training_block }}
```
{% endif %}{% if evaluation_table %}
## Evaluation results

{{ evaluation_table }}
{% endif %}
## Intended use

{{ intended_use }}

## Limitations

{{ limitations }}
"""


# ------------------------------------------------------------------ loading
def looks_local(path: str) -> bool:
    """Whether ``path`` can only be a folder, never a Hub repo id ``org/name``."""
    return (
        path.startswith(("/", ".", "~"))
        or (os.sep != "/" and os.sep in path)
        or path.count("/") != 1
        or os.path.exists(path)
    )


def check_safetensors(file: str) -> None:
    """``ValueError`` unless ``file`` is a complete safetensors file: an 8-byte header length, a
    JSON header, and exactly the data its tensors' offsets describe."""
    size = os.path.getsize(file)
    with open(file, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= size - 8:
            raise ValueError(
                f"{file}: not a complete safetensors file ({size} bytes, header length "
                f"{length}); the file is truncated or corrupted: download or save it again"
            )
        try:
            header = json.loads(handle.read(length))
            end = max(
                (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                default=0,
            )
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise ValueError(
                f"{file}: the safetensors header is unreadable ({error}); the file is corrupted: "
                "download or save it again"
            ) from error
    if 8 + length + end != size:
        raise ValueError(
            f"{file}: {size} bytes, but its header describes {8 + length + end}; the file is "
            "truncated or corrupted: download or save it again"
        )


def check_pipeline_folder(path: str) -> None:
    """``ValueError`` for a folder that is not a complete saved pipeline: no readable
    ``model_index.json``, a listed component without its folder or config, or a weights file
    that is not a complete safetensors file."""
    index = os.path.join(path, "model_index.json")
    if not os.path.isfile(index):
        raise ValueError(
            f"`pretrained_model_name_or_path`: {path!r} has no model_index.json; expected a "
            "folder written by SLAMSPipeline.save_pretrained"
        )
    try:
        with open(index) as handle:
            entries = json.load(handle)
    except ValueError as error:
        raise ValueError(f"{index}: not valid JSON ({error})") from error
    for name, entry in entries.items():
        component = (
            isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)
        )
        if name.startswith("_") or not component:
            continue  # metadata, an absent optional component or a setting (spread_inflation)
        folder = os.path.join(path, name)
        configs = ("config.json", "scheduler_config.json")
        if not os.path.isdir(folder):
            raise ValueError(
                f"`pretrained_model_name_or_path`: component {name!r} ({entry[-1]}) is listed in "
                f"{index} but the folder {folder!r} is missing; expected the complete folder "
                "written by save_pretrained"
            )
        if not any(os.path.isfile(os.path.join(folder, c)) for c in configs):
            raise ValueError(
                f"`pretrained_model_name_or_path`: component {name!r} has no config.json in "
                f"{folder!r}; expected the complete folder written by save_pretrained"
            )
        for file in sorted(os.listdir(folder)):
            if file.endswith(".safetensors"):
                check_safetensors(os.path.join(folder, file))


def check_finite_weights(pipe: Any, path: str) -> None:
    """``ValueError`` naming the component whose loaded weights hold NaN or inf."""
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        tensors = [t for t in (*component.parameters(), *component.buffers())]
        tensors = [t for t in tensors if t.is_floating_point()]
        bad = sum(int((~torch.isfinite(t)).sum()) for t in tensors)
        if bad:
            total = sum(t.numel() for t in tensors)
            raise ValueError(
                f"`pretrained_model_name_or_path`: {bad} of {total} weights of component {name!r} "
                f"in {os.path.join(path, name)!r} are NaN or inf; the weights file is corrupted: "
                "download or save it again"
            )


def embedded_pipelines() -> list[str]:
    """The names of the pretrained pipelines shipped with the package, sorted. Each loads offline
    by its name alone, from any working directory: ``SLAMSPipeline.from_pretrained(name)``."""
    if not EMBEDDED_ROOT.is_dir():
        return []
    return sorted(p.name for p in EMBEDDED_ROOT.iterdir() if (p / "model_index.json").is_file())


def resolve_pipeline(pretrained_model_name_or_path: str | os.PathLike, **hub_kwargs: Any) -> str:
    """The local folder of a pipeline, in this order: an existing folder as it is (it wins over
    an embedded pipeline of the same name); the folder of an embedded pipeline's name (see
    :func:`embedded_pipelines`); the Hub snapshot of a repo id ``org/name`` (``hub_kwargs``:
    :data:`HUB_KWARGS` of ``snapshot_download``).

    ``ValueError`` listing the embedded names for anything else: a path that can only be a
    (missing) folder, an invalid repo id, or a repo that cannot be fetched (offline and not
    cached, or no such repo).
    """
    path = os.fspath(pretrained_model_name_or_path)
    if os.path.isdir(path):
        return path
    names = embedded_pipelines()
    if path in names:
        return str(EMBEDDED_ROOT / path)
    where = f"(working directory {os.getcwd()!r})"
    expected = (
        f"expected a folder written by save_pretrained, the name of an embedded pipeline "
        f"{names} or a Hub repo id 'org/name'"
    )
    if looks_local(path):
        found = "is a file" if os.path.exists(path) else "does not exist"
        raise ValueError(
            f"`pretrained_model_name_or_path`: the folder {path!r} {found} {where}; {expected}"
        )
    try:
        return huggingface_hub.snapshot_download(path, **hub_kwargs)
    except HFValidationError as error:
        raise ValueError(
            f"`pretrained_model_name_or_path`: {path!r} is neither a folder {where} nor a valid "
            f"Hub repo id; {expected}"
        ) from error
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise ValueError(
            f"`pretrained_model_name_or_path`: {path!r} is not a folder {where} and the Hub repo "
            "could not be fetched (offline with HF_HUB_OFFLINE=1 and not in the cache, or no "
            f"such repo: {' '.join(str(error).split())}); {expected}"
        ) from error


# ------------------------------------------------------------------ model cards
def _format_value(value: Any) -> str:
    """Format one table cell: floats with 4 significant digits, everything else via ``str``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def evaluation_table(evaluation: Mapping[str, Any]) -> str:
    """Render evaluation results as a Markdown table.

    A flat mapping ``{metric: value}`` gives a two-column ``Metric | Value`` table; a nested
    mapping ``{row: {column: value}}`` gives one row per key and the union of inner keys as
    columns (missing cells left empty).
    """
    if not isinstance(evaluation, Mapping) or not evaluation:
        raise ValueError("evaluation must be a non-empty mapping")
    if all(isinstance(v, Mapping) for v in evaluation.values()):
        columns: list[str] = []
        for row in evaluation.values():
            columns += [str(k) for k in row if str(k) not in columns]
        lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for name, row in evaluation.items():
            str_row = {str(k): v for k, v in row.items()}
            cells = [_format_value(str_row[c]) if c in str_row else "" for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    else:
        lines = ["| Metric | Value |", "|---|---|"]
        lines += [f"| {k} | {_format_value(v)} |" for k, v in evaluation.items()]
    return "\n".join(lines)


def model_card(
    *,
    repo_id: str | None,
    base_description: str,
    datasets: Sequence[str] = (),
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    intended_use: str = DEFAULT_INTENDED_USE,
    limitations: str = DEFAULT_LIMITATIONS,
) -> ModelCard:
    """Build the model card of a SLAMS pipeline, offline.

    Args:
        repo_id: Hub repo id (``"org/name"``) or embedded pipeline name, used in the title and
            the load snippet; ``None`` for a local folder (the snippet then loads
            ``"path/to/pipeline"``).
        base_description: Free text describing the pipeline (models, data, resolution).
        datasets: Hub data set ids or names, put into the card metadata.
        training: Training configuration, rendered as a YAML block.
        evaluation: Evaluation results, rendered as a Markdown table (see
            :func:`evaluation_table`).
        intended_use: Text of the "Intended use" section.
        limitations: Text of the "Limitations" section.

    Returns:
        A :class:`huggingface_hub.ModelCard` (not validated; that needs the network).
    """
    if repo_id is not None and (not isinstance(repo_id, str) or not repo_id.strip()):
        raise ValueError(f"repo_id must be None or a non-empty string, got {repo_id!r}")
    if not isinstance(base_description, str) or not base_description.strip():
        raise ValueError("base_description must be a non-empty string")
    if isinstance(datasets, str) or not all(isinstance(d, str) and d for d in datasets):
        raise ValueError(f"datasets must be a list of non-empty strings, got {datasets!r}")
    if training is not None and not isinstance(training, Mapping):
        raise ValueError(f"training must be a mapping or None, got {type(training).__name__}")
    if evaluation is not None and not isinstance(evaluation, Mapping):
        raise ValueError(f"evaluation must be a mapping or None, got {type(evaluation).__name__}")

    card_data = ModelCardData(
        library_name="diffusers",
        tags=list(CARD_TAGS),
        datasets=list(datasets) or None,
        license="apache-2.0",
        pipeline_tag=None,
    )
    training_block = ""
    if training:
        # JSON round trip turns tuples / numpy scalars' str into plain YAML-safe types.
        plain = json.loads(json.dumps(dict(training), default=str))
        training_block = yaml.safe_dump(plain, sort_keys=False).rstrip()
    return ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        title=repo_id.split("/")[-1] if repo_id else "SLAMS pipeline",
        description=base_description.strip(),
        load_path=repo_id or "path/to/pipeline",
        training_block=training_block,
        evaluation_table=evaluation_table(evaluation) if evaluation else "",
        intended_use=intended_use.strip(),
        limitations=limitations.strip(),
    )


def save_model_card(card: ModelCard, folder: str | os.PathLike) -> Path:
    """Write ``card`` as ``README.md`` into ``folder`` (created if missing); return its path."""
    if not isinstance(card, ModelCard):
        raise ValueError(f"card must be a huggingface_hub.ModelCard, got {type(card).__name__}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder {str(folder)!r} exists and is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "README.md"
    card.save(path)
    return path


def _plain(value: Any) -> Any:
    """JSON fallback: numpy / torch scalars and arrays as numbers and lists, else ``str``."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def pipeline_card(
    folder: str | os.PathLike,
    *,
    evaluation: Mapping[str, Any] | None = None,
    **card_inputs: Any,
) -> ModelCard:
    """Write the model card of a saved pipeline folder as ``README.md`` and return it.

    The :func:`model_card` arguments are kept in ``folder/model_card.json``: ``card_inputs``
    (``repo_id``, ``base_description``, ``datasets``, ``training``, ...) update them, and
    ``evaluation`` replaces the stored evaluation results, so a card written at the end of
    training gains its evaluation table later without losing the training record.
    """
    folder = Path(folder)
    path = folder / CARD_INPUTS
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored.update(card_inputs)
    if evaluation is not None:
        stored["evaluation"] = evaluation
    stored = json.loads(json.dumps(stored, default=_plain))
    card = model_card(**{"repo_id": None, **stored})
    save_model_card(card, folder)
    path.write_text(json.dumps(stored, indent=2) + "\n")
    return card


def _check_upload_folder(folder: Path) -> None:
    """Raise ValueError unless ``folder`` is a pipeline folder with safetensors weights only."""
    if not folder.is_dir():
        raise ValueError(f"folder {str(folder)!r} is not a directory")
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"folder {str(folder)!r} has no model_index.json; save it with "
            "SLAMSPipeline.save_pretrained first"
        )
    pickled = sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in FORBIDDEN_WEIGHT_SUFFIXES
    )
    if pickled:
        raise ValueError(
            f"folder {str(folder)!r} contains pickle-based weights {pickled}; "
            "upload safetensors only (save_pretrained(safe_serialization=True))"
        )


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload SLAMS pipeline",
) -> str:
    """Upload a saved pipeline folder to the Hub (network needed).

    The folder must contain ``model_index.json`` and no weights file with one of
    :data:`FORBIDDEN_WEIGHT_SUFFIXES` (safetensors only). The repo is created if missing
    (``exist_ok=True``).

    Returns:
        The commit URL as returned by ``HfApi.upload_folder``.
    """
    folder = Path(folder)
    _check_upload_folder(folder)
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a non-empty string, got {repo_id!r}")
    if not isinstance(commit_message, str) or not commit_message.strip():
        raise ValueError("commit_message must be a non-empty string")
    api = huggingface_hub.HfApi(token=token)  # looked up at call time so tests can patch it
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message
    )
    return str(getattr(info, "commit_url", info))
