"""Fine-tuning the local generator with LoRA on the CPU: data, training, training card, evaluation.

Importing this package imports neither torch, transformers nor peft; they load inside the functions that use them.
"""
