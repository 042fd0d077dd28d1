"""The Vitis AI container bundle: plain files that AMD's own tools take, and the script that runs them.

greenpipe needs Python 3.11 and torch 2.13; the Vitis AI 3.5 PyTorch container
ships Python 3.8, torch 1.13 and vai_q_pytorch. So nothing of greenpipe runs
in the container: ``greenpipe vitis-bundle`` writes a folder holding the float
model as a self-contained PyTorch source file plus its weights
(:mod:`greenpipe.vitis.torch_source`), the calibration samples as ``.npz``,
the DPU's ``arch.json`` and :mod:`greenpipe.vitis.vai_quantize` (a standalone
script), and ``infra/vitis/run.sh BUNDLE ptq|qat`` runs that script in the
container: quantize, export the xmodel, compile it with ``vai_c_xir``.
"""
