"""Where the data comes from: the dataset table, one reader per raw format, the synthetic generator.

Raw readers: one module per raw format, each turning a dataset's download into clips of the on-disk
format, with its checks. `RAW_FORMATS` maps the `raw_format` of a dataset_table.py entry to its reader;
adding a dataset is its table entry, a reader here and its tests (docs/data.md, "Adding a dataset"); a set
of skeletons in numpy arrays needs none of them, only its layout (`arrays.py`, "Your own skeletons").
The table (`dataset_table.py`) and the procedural set (`synthetic.py`, raw NTU-format files that
`synthetic_set.py` reads) sit here because they import nothing above the readers and only the commands
and the evaluation read them."""
from readers import arrays, ntu, nw_ucla, pku, synthetic_set
from readers.common import Job, RawFormat, Sample, SkeletonFileError, to_fixed_length
from readers.prenormalize import pre_normalize

RAW_FORMATS = {
    "ntu": ntu.FORMAT,
    "pku": pku.FORMAT,
    "nw_ucla": nw_ucla.FORMAT,
    "synthetic": synthetic_set.FORMAT,
    "arrays": arrays.FORMAT,          # no dataset of the table: `prepare_data.py arrays`, any layout
}

__all__ = ["RAW_FORMATS", "Job", "RawFormat", "Sample", "SkeletonFileError", "pre_normalize",
           "to_fixed_length"]
