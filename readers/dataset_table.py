"""The dataset table: every dataset the scripts know, one `DatasetEntry` each.

An entry names the dataset (the `--pre-dataset` / `--finetune-dataset` value and its folder under
`--data-dir`), its skeleton layout (`graph.LAYOUTS`), its class count (and names, where known), its
protocols with their folder names and split rules, and the raw format (readers/) `prepare_data.py`
converts it with. `prepare_data.py`'s subcommands, the prepared folders, the class counts and the
scripts' `--*-dataset` / `--protocol` values all come from here. A new dataset is one
`register(DatasetEntry(...))` (plus its layout in graph.py and its reader in readers/ when they are
new); docs/data.md shows one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import graph
from readers import synthetic

CUSTOM = "custom"     # not an entry: any prepared folder (--data-dir), layout --layout (NTU's by default),
                      # classes from the labels
LAYOUT_HELP = ("skeleton layout of a custom folder: a built-in layout's name ({names}) or a layout file "
               "FILE.json (docs/data.md, 'Your own skeletons'); default: the checkpoint's where there is "
               "one, else ntu. Other datasets have their own; repeating it is allowed")


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol of a dataset: its prepared sub-folder and how clips split into train/val.

    `split` is read by the dataset's raw reader: for 'ntu' one of 'subject' (training performers),
    'camera' (cameras 2, 3 train) or 'setup' (even setups train); for 'pku' the split file's name; for
    'nw_ucla' 'view3' (views 1 and 2 train) or 'view1' (view 1 trains, view 2 validates). An `optional`
    protocol is left out, with a note, when the raw files give one of its parts no clip."""
    folder: str
    split: str
    optional: bool = False


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    layout: str                          # key of graph.LAYOUTS
    num_class: int
    protocols: dict                      # protocol name -> Protocol
    raw_format: str | None = None        # readers.RAW_FORMATS key; None: prepared elsewhere
    aliases: tuple[str, ...] = ()        # other names prepare_data.py accepts (released: pku1, pku2)
    raw_limits: dict = field(default_factory=dict)   # keyword arguments of the reader (e.g. max_action)
    class_names: tuple[str, ...] = ()    # label -> name, where the table knows them (pictures, reports)

    def __post_init__(self):
        graph.get_layout(self.layout)
        if self.num_class < 1 or not self.protocols:
            raise ValueError(f"dataset {self.name!r}: expected num_class >= 1 and at least one protocol")
        if self.class_names and len(self.class_names) != self.num_class:
            raise ValueError(f"dataset {self.name!r}: {len(self.class_names)} class names for "
                             f"{self.num_class} classes")

    def folder(self, protocol: str, data_dir: str = ".") -> str:
        return os.path.join(data_dir, self.name, self.protocols[protocol].folder)

    def protocol_of_folder(self, folder: str) -> str:
        return next(p for p, spec in self.protocols.items() if spec.folder == folder)


XSUB, XVIEW = Protocol("xsub", "subject"), Protocol("xview", "camera")
ENTRIES: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    """Add `entry` to the table (a name already there is replaced)."""
    ENTRIES[entry.name] = entry
    return entry


register(DatasetEntry("ntu60", "ntu", 60, {"cross_subject": XSUB, "cross_view": XVIEW}, "ntu",
                      raw_limits={"max_setup": 17, "max_action": 60}))
register(DatasetEntry("ntu120", "ntu", 120,
                      {"cross_subject": XSUB, "cross_setup": Protocol("xsetup", "setup")}, "ntu"))
register(DatasetEntry("pku_v1", "ntu", 51, {"cross_subject": Protocol("xsub", "cross-subject.txt"),
                                            "cross_view": Protocol("xview", "cross-view.txt")},
                      "pku", aliases=("pku1",)))
register(DatasetEntry("pku_v2", "ntu", 41, {"cross_subject": Protocol("xsub", "cross_subject_v2.txt"),
                                            "cross_view": Protocol("xview", "cross_view_v2.txt")},
                      "pku", aliases=("pku2",)))
# NW-UCLA: actions 1-6, 8, 9, 11, 12 are labels 0-9; cross-view: views 1 and 2 train, view 3 tests.
# cross_view_val, for choosing recipes without reading the test view: view 1 trains, view 2 validates
# (a cross-view split inside the training views), view 3 is left out.
register(DatasetEntry("nw_ucla", "nw_ucla", 10, {"cross_view": Protocol("xview", "view3"),
                                                 "cross_view_val": Protocol("xview_val", "view1", optional=True)},
                      "nw_ucla",
                      class_names=("pick up with one hand", "pick up with two hands", "drop trash",
                                   "walk around", "sit down", "stand up", "donning", "doffing", "throw",
                                   "carry")))
register(DatasetEntry("synthetic", "ntu", synthetic.NUM_CLASSES, {"cross_subject": XSUB, "cross_view": XVIEW},
                      "synthetic", class_names=synthetic.CLASS_NAMES))


def dataset_names(custom: bool = True) -> tuple[str, ...]:
    """The values of --pre-dataset / --finetune-dataset."""
    return tuple(ENTRIES) + ((CUSTOM,) if custom else ())


def protocol_names() -> tuple[str, ...]:
    """Every protocol some dataset defines, in table order."""
    return tuple(dict.fromkeys(p for entry in ENTRIES.values() for p in entry.protocols))


def get(name: str) -> DatasetEntry:
    """The entry called `name` or one of its aliases."""
    for entry in ENTRIES.values():
        if name == entry.name or name in entry.aliases:
            return entry
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")


def layout_of(dataset: str) -> str:
    """The skeleton layout of `dataset` ('ntu' for 'custom'; an unknown name is refused elsewhere)."""
    entry = ENTRIES.get(dataset)
    return entry.layout if entry else "ntu"


def add_layout_argument(parser) -> None:
    """--layout NAME|FILE.json, for the commands that read prepared data."""
    parser.add_argument("--layout", default=None, metavar="NAME|FILE.json",
                        help=LAYOUT_HELP.format(names=", ".join(graph.LAYOUTS)))


def resolve_layout(dataset: str, given: str | None = None, fallback=None) -> graph.Layout:
    """The skeleton layout of `dataset`: `given` (--layout: a built-in name or a layout file), else
    `fallback` (e.g. a checkpoint's record) for 'custom', else the table's (NTU's for 'custom'). A --layout
    that contradicts a table entry's layout is a ValueError naming both."""
    if given is None:
        if dataset == CUSTOM and fallback is not None:
            return graph.get_layout(fallback)
        return graph.get_layout(layout_of(dataset))
    if given in graph.LAYOUTS:
        layout = graph.LAYOUTS[given]
    elif given.endswith(".json") or os.path.exists(given):
        layout = graph.read_layout_file(given)
    else:
        raise ValueError(f"--layout {given}: not a built-in layout ({', '.join(graph.LAYOUTS)}) nor a "
                         f"layout file FILE.json")
    entry = ENTRIES.get(dataset)
    if entry is not None and graph.get_layout(entry.layout) != layout:
        raise ValueError(f"--layout {given} (layout {layout.name!r}) contradicts dataset {dataset}'s own "
                         f"layout {entry.layout!r}; --layout is for --*-dataset {CUSTOM}")
    return layout


@dataclass
class Benchmark:
    dataset: str
    protocol: str
    folder: str
    num_class: int | None                # None for 'custom': the labels say
    layout: str = "ntu"                  # the layout's name
    skeleton: graph.Layout = graph.LAYOUTS["ntu"]    # the layout itself


def resolve_benchmark(dataset: str, protocol: str, data_dir: str = "./data",
                      layout: graph.Layout | None = None) -> Benchmark:
    """Map a (dataset, protocol) pair to its prepared folder; 'custom' means `data_dir` itself, with
    `layout` (resolve_layout; default NTU's)."""
    if dataset == CUSTOM:
        layout = layout or graph.get_layout("ntu")
        return Benchmark(dataset, protocol, data_dir, None, layout.name, layout)
    entry = ENTRIES.get(dataset)
    if entry is None or protocol not in entry.protocols:
        valid = ", ".join(f"{e.name} {p}" for e in ENTRIES.values() for p in e.protocols)
        raise ValueError(f"unknown benchmark {dataset!r} {protocol!r}; valid pairs: {valid}, "
                         f"{CUSTOM} <any protocol> (with --data-dir)")
    return Benchmark(dataset, protocol, entry.folder(protocol, data_dir), entry.num_class, entry.layout,
                     graph.get_layout(entry.layout))
