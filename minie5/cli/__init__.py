"""The `minie5` command line and the HTTP server.

    main.py     the `minie5` command: embed, search, eval, info, serve, quantize (main() wires the subcommands)
    search.py   exact and binary search over embedded corpora (`minie5 search`)
    evaluate.py `minie5 eval`: retrieval metrics (nDCG, MRR, recall, MAP) on BEIR-layout data
    server.py   `minie5 serve`: OpenAI-compatible /v1/embeddings over http.server
    batcher.py  gathers the server's concurrent requests into batches

May import everything below it: minie5.model and the modules it stands on, minie5.io,
minie5.checkpoint, and (inside `embed --ray` only) minie5.distributed. Nothing imports it but
minie5.__main__ and the `minie5` entry point.
"""
