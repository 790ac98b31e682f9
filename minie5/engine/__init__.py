"""The fast path: the same maths as reference.py on packed tokens, as Numba kernels and sgemm.

    encoder.py       FastEncoder: the forward pass over packed tokens, calling the kernels below
    layer_loop.py    LayerLoop: a short batch's layers in one compiled call per thread, barriers between steps
    kernels.py       the float32 Numba kernels (matmul, attention, LayerNorm, GELU, pooling, and the
                     manhattan distances of SentenceTransformer.similarity); their NumPy twins are in
                     minie5/reference.py
    kernels_panel.py the float32 small-batch matmul over transposed weights (LLVM vector IR, FMAs in registers)
    kernels_int8.py  the int8 Numba kernels (panel matmul on int16 x int8); twins in minie5/reference_int8.py
    blas.py          numpy's sgemm for the larger products, called from Numba threads
    matmul_plan.py   which product runs where (Numba kernel or sgemm, serial or threaded), by row count
    workers.py       the thread pool that runs kernels side by side

May import: numpy, numba, minie5.errors, minie5.reference, minie5.reference_int8 and minie5.checkpoint.
Imported only when a model is loaded (minie5.model) or a manhattan similarity is computed, never by
`import minie5`.
"""
