"""X-Instruction as reusable Hugging Face components.

Cross-lingual instruction-tuning data (English instruction, target-language response) built from
native web text, following "X-Instruction: Aligning Language Model in Low-resource Languages with
Self-curated Cross-lingual Instructions". See the README for the CLI; the Python API mirrors it:
:func:`xinstruct.config.load_recipe`, :func:`xinstruct.pipeline.run`, :mod:`xinstruct.stages`.
"""

__version__ = "0.1.0"
