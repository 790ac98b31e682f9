"""The model files: what is read from a model directory or the hub, and the int8 directory written back.

    config.py          config.json and the sentence-transformers files -> ModelConfig (a frozen dataclass)
    hub.py             a hub repo id or a local directory -> the directory holding the files (huggingface_hub)
    weights.py         model.safetensors -> Weights, the name -> array mapping, every key and shape checked
    parameter_table.py the parameter count per block, from the safetensors header (`minie5 info`)
    quantize_model.py  quantising a model's weights to int8, and the int8 directory format (`minie5 quantize`)

May import: numpy, safetensors, huggingface_hub, minie5.errors and minie5.reference_int8 (the int8
matrix type). Nothing here runs the encoder.
"""
