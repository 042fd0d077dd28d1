"""The Vitis AI container bundle: plain files that AMD's own tools take, and the script that runs them.

greenpipe needs Python 3.11, torch 2.13 and Keras 3; the Vitis AI 3.5
containers ship Python 3.8 with torch 1.13 and vai_q_pytorch, or with
TensorFlow 2.12 (Keras 2) and vai_q_tensorflow2. So nothing of greenpipe runs
in a container: ``greenpipe vitis-bundle`` writes a folder holding the float
model as one self-contained source file plus its weights (PyTorch:
:mod:`greenpipe.vitis.torch_source`; the video recipe's Keras kernels:
:mod:`greenpipe.vitis.keras_source`), the calibration samples as ``.npz``,
reference outputs, the DPU's ``arch.json`` and
:mod:`greenpipe.vitis.vai_quantize` (a standalone script), and
``infra/vitis/run.sh BUNDLE ptq|fastft|qat`` runs that script in the container
of its framework: check, quantize, export, compile for the DPU.
``greenpipe vitis-import BUNDLE MODE --out DIR``
(:mod:`greenpipe.vitis.results`) checks what the run left in the bundle and
writes its xmodel in the compile stage's layout, for ``deploy``.
"""
