"""Save and restore a training run, safely and exactly.

A checkpoint is a folder with two files:

    model.safetensors    the weights (safetensors: plain tensors, no code runs on load;
                         tied weights are stored once)
    training_state.pt    optimizer, LR scheduler and GradScaler state, the step counter,
                         every random number generator's state, and your ``extra`` dict.
                         Loaded with torch.load(weights_only=True): tensors and plain
                         Python values only, never arbitrary pickled objects.

Both files are written to temporary names and then renamed, so an interrupted save
never leaves a half-written file; both record the step, and loading checks they agree.

    save_checkpoint("checkpoints/run1", model, optimizer, step=500, extra={"config": asdict(cfg)})
    state = load_checkpoint("checkpoints/run1", model, optimizer)   # state["step"] == 500

``fit`` (tfmlib.train) does this for you with ``checkpoint_dir=`` and ``resume=True``;
restoring the RNG states is what makes "N steps, save, load, N steps" bit-identical to
2N steps in one go.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_model, save_model

__all__ = ["save_checkpoint", "load_checkpoint", "has_checkpoint", "rng_state", "set_rng_state",
           "MODEL_FILE", "STATE_FILE"]

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # a torch.compile'd model wraps the original


def rng_state() -> dict:
    """The state of Python's, NumPy's and PyTorch's (CPU and CUDA) generators, as plain values."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Undo ``rng_state``: every generator continues exactly where it was."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def has_checkpoint(directory: str | os.PathLike) -> bool:
    directory = Path(directory)
    return (directory / MODEL_FILE).is_file() and (directory / STATE_FILE).is_file()


def _replace_atomically(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)  # atomic on POSIX and Windows when both live in the same folder


def save_checkpoint(directory: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None, *,
                    step: int = 0, extra: dict | None = None, scaler=None) -> Path:
    """Write ``model.safetensors`` and ``training_state.pt`` into ``directory``; return the folder.

    ``extra`` holds anything else you need later (a config as a dict, the loss history):
    plain Python values and tensors only, since loading refuses arbitrary objects.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {"step": int(step), "rng": rng_state(), "extra": dict(extra or {}),
             "optimizer": optimizer.state_dict() if optimizer is not None else None,
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "scaler": scaler.state_dict() if scaler is not None else None}
    tmp_model, tmp_state = directory / (MODEL_FILE + ".tmp"), directory / (STATE_FILE + ".tmp")
    save_model(_unwrap(model), str(tmp_model), metadata={"step": str(int(step))})
    torch.save(state, tmp_state)
    _replace_atomically(tmp_state, directory / STATE_FILE)
    _replace_atomically(tmp_model, directory / MODEL_FILE)
    return directory


def load_checkpoint(directory: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None, *,
                    scaler=None, restore_rng: bool = True, strict: bool = True,
                    device: torch.device | str | None = None) -> dict:
    """Load weights into ``model`` (and state into the optimizer/scheduler/scaler you pass).

    Returns a dict with ``step`` and ``extra``. With ``restore_rng`` every random number
    generator continues where it was when the checkpoint was saved (exact resumption).
    """
    directory = Path(directory)
    if not has_checkpoint(directory):
        raise FileNotFoundError(f"no checkpoint in {str(directory)!r}: expected {MODEL_FILE} and {STATE_FILE}")
    model = _unwrap(model)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    with safe_open(str(directory / MODEL_FILE), framework="pt") as f:
        model_step = (f.metadata() or {}).get("step")
    if model_step is not None and int(model_step) != state["step"]:
        raise RuntimeError(f"checkpoint in {str(directory)!r} is inconsistent: weights from step {model_step}, "
                           f"training state from step {state['step']} (a save was interrupted?)")
    missing, unexpected = load_model(model, str(directory / MODEL_FILE), strict=strict, device=str(device))
    if missing or unexpected:  # only reachable with strict=False
        print(f"load_checkpoint: missing keys {missing}, unexpected keys {unexpected}")
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if state.get(name) is None:
            if name == "scaler":  # a run saved without fp16 (e.g. on the CPU) resumed with it
                continue
            raise ValueError(f"the checkpoint in {str(directory)!r} holds no {name} state")
        obj.load_state_dict(state[name])
    if restore_rng:
        set_rng_state(state["rng"])
    return {"step": state["step"], "extra": state["extra"]}
