"""Embedding on a Ray cluster (the `ray` extra): the Python API, the `embed --ray` job and its input reader.

    ray_data.py     embed_dataset, Embedder, job_stats: the Python API over Ray Data (minie5.distributed)
    ray_command.py  `minie5 embed --ray`: a whole job from files to Parquet, with ids, retries and --resume
    shards.py       text, JSON Lines and Parquet inputs cut into shards with fixed row ids
    id_index.py     IdIndex: the input's --id-field values hashed once, the row of any id (the driver's books)

    from minie5.distributed import embed_dataset, Embedder, job_stats

Importing it without Ray raises minie5.MissingExtraError naming the pip command. May import
minie5.model and what it stands on, and minie5.io; `import minie5` never imports it.
"""
from .ray_data import Embedder, embed_dataset, job_stats

__all__ = ["embed_dataset", "Embedder", "job_stats"]
