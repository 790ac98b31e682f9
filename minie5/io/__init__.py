"""Reading texts in and writing embeddings out, shared by the command line and the cluster job.

    files.py     text and JSON Lines inputs (line numbers kept), .npy / .jsonl writers, resumable .partial files
    progress.py  the progress bar on stderr

May import: numpy, minie5.errors and minie5.embedding_precision. Nothing here loads a model.
"""
