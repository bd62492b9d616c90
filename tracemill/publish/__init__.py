"""Publishing: a Hub-ready folder per dataset, checked with `datasets`, pushed with huggingface_hub.

`publish/<dataset>/` holds one config per table (`data/<config>/<split>-XXXXX-of-YYYYY.parquet`) and a
`README.md` dataset card: YAML front matter the Hub and `datasets` read (configs and their splits,
features mapped one-to-one from the table's pyarrow schema, license, tags) and a body filled into the
template `card.md`. Every statement the body makes about the rows is computed from the published
rows or from the params and dvc.lock of the stages that wrote them, so the card cannot drift from the code.

Splits follow the problems: only rows of problems whose split is `train` go in a `train` split, and
a row that shares a word n-gram (publish.decontam_ngram) with a held-out (eval or test) question is
held back too; the card and metrics count what was held back and why. Held-out problems and
evaluation traces are published as `test`, never as `train`.

The folder is built in a temp sibling, every config and split is loaded back with
`datasets.load_dataset` and compared with its schema, and only then swapped in. Its bytes depend only
on the tables, params, dvc.lock and git state (no timestamps), so a re-push of an unchanged folder
leaves the Hub repo as it was: huggingface_hub compares each file's hash with the remote one, drops
unchanged files from the commit and makes no commit when none are left.

Modules: `params` (the params section), `tables` (reading a config's rows, writing shards), `splits`
(what a train split may hold), `licenses`, `lineage` (dvc.lock and git provenance), `methods` (methods,
row definitions in `rows.md`, citations from `references.bib`), `card` (front matter and body), `build`
(the folder, validated) and `hub` (the push).
"""

from tracemill.publish.build import BuildReport, build, validate_folder
from tracemill.publish.card import CARD, CARD_TEMPLATE
from tracemill.publish.errors import PublishError
from tracemill.publish.hub import PushResult, check_repo_id, hf_token, push
from tracemill.publish.licenses import Origin, card_license, hub_license
from tracemill.publish.params import BY_PROBLEM, TEST, TRAIN, ConfigParams, DatasetParams, PublishParams
from tracemill.publish.splits import Guard

__all__ = [
    "BY_PROBLEM",
    "CARD",
    "CARD_TEMPLATE",
    "TEST",
    "TRAIN",
    "BuildReport",
    "ConfigParams",
    "DatasetParams",
    "Guard",
    "Origin",
    "PublishError",
    "PublishParams",
    "PushResult",
    "build",
    "card_license",
    "check_repo_id",
    "hf_token",
    "hub_license",
    "push",
    "validate_folder",
]
