"""The seed's CNN STVS surrogate (seed 002 §2.2), on torch (the optional ``rl`` / ``stvs`` extras).

The input vector (the features of :func:`env.stvs.surrogate.feature_vector`, standardized) is a
1-D signal of one channel. Three conv–pool blocks of 32 / 64 / 128 filters (3x1 kernels, ReLU,
2x1 max pooling), dense 128 and 64 (ReLU, dropout 0.5), and two outputs: the TVCI logit
(classifier, ``P(stable) = sigmoid``) and VDSI (regressor). Trained as the seed does: Adam at
1e-3, L2 1e-4 (weight decay), batch 32, at most 100 epochs with early stopping on the
validation loss (patience 10), the 6:2:2 split of :func:`env.stvs.surrogate.split_indices`.
Loss: binary cross-entropy on TVCI plus mean squared error on VDSI.

:meth:`StvsCNN.predict` has the numpy surrogate's interface, so
:func:`env.stvs.surrogate.table4` reports both the same way (docs/stvs.md "The seed's CNN").
Weights ship in ``env/stvs/data/cnn_t14d2.pt``.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
from torch import nn

CNN_WEIGHTS_FILE = "cnn_t14d2.pt"
_FILTERS = (32, 64, 128)
_DENSE = (128, 64)


class _Net(nn.Module):
    """The seed's architecture on an input of ``n_features`` values."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch, length = 1, n_features
        for f in _FILTERS:
            layers += [nn.Conv1d(ch, f, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool1d(2, ceil_mode=True)]
            ch, length = f, (length + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(ch * length, _DENSE[0]), nn.ReLU(), nn.Dropout(0.5),
                                   nn.Linear(_DENSE[0], _DENSE[1]), nn.ReLU(), nn.Dropout(0.5))
        self.out = nn.Linear(_DENSE[1], 2)           # [TVCI logit, VDSI]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.dense(self.conv(z[:, None, :])))


@dataclass
class TrainReport:
    """What training did: epochs run, the best validation loss, wall seconds."""

    epochs: int
    best_val_loss: float
    seconds: float


class StvsCNN:
    """Standardization plus the trained network; :meth:`predict` maps features to (TVCI, VDSI)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, net: _Net) -> None:
        self.mean, self.scale, self.net = np.asarray(mean, float), np.asarray(scale, float), net.eval()

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(TVCI in {0, 1}, VDSI >= 0) for features ``x`` (n, F) or (F,)."""
        z = (np.atleast_2d(np.asarray(x, float)) - self.mean) / self.scale
        with torch.no_grad():
            out = self.net(torch.as_tensor(z, dtype=torch.float32)).numpy()
        return (out[:, 0] > 0).astype(int), np.maximum(out[:, 1], 0.0).astype(float)

    @classmethod
    def fit(cls, x: np.ndarray, tvci: np.ndarray, vdsi: np.ndarray, x_val: np.ndarray, tvci_val: np.ndarray,
            vdsi_val: np.ndarray, seed: int = 0, max_epochs: int = 100, patience: int = 10
            ) -> tuple["StvsCNN", TrainReport]:
        """Train on (x, tvci, vdsi), stopping early on the validation loss (module docstring)."""
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)

        def tensors(a: np.ndarray, tv: np.ndarray, vd: np.ndarray) -> tuple[torch.Tensor, ...]:
            return (torch.as_tensor((a - mean) / scale, dtype=torch.float32),
                    torch.as_tensor(tv, dtype=torch.float32), torch.as_tensor(vd, dtype=torch.float32))

        zt, tvt, vdt = tensors(x, tvci, vdsi)
        zv, tvv, vdv = tensors(x_val, tvci_val, vdsi_val)
        net = _Net(x.shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
        bce, mse = nn.BCEWithLogitsLoss(), nn.MSELoss()

        def loss_of(z: torch.Tensor, tv: torch.Tensor, vd: torch.Tensor) -> torch.Tensor:
            out = net(z)
            return bce(out[:, 0], tv) + mse(out[:, 1], vd)

        gen = torch.Generator().manual_seed(seed)
        best, best_state, stale, epoch = np.inf, None, 0, 0
        for epoch in range(1, max_epochs + 1):
            net.train()
            for idx in torch.randperm(len(zt), generator=gen).split(32):
                opt.zero_grad()
                loss = loss_of(zt[idx], tvt[idx], vdt[idx])
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val = float(loss_of(zv, tvv, vdv))
            if val < best - 1e-6:
                best, stale = val, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= patience:
                    break
        net.load_state_dict(best_state)
        return cls(mean, scale, net), TrainReport(epoch, best, time.perf_counter() - t0)

    def save(self, path: str) -> None:
        torch.save({"mean": self.mean, "scale": self.scale, "n_features": len(self.mean),
                    "state": self.net.state_dict()}, path)

    @classmethod
    def load(cls, path: str | None = None) -> "StvsCNN":
        """The shipped weights (``path`` None) or a saved file."""
        if path is None:
            raw = resources.files("env.stvs").joinpath("data", CNN_WEIGHTS_FILE).read_bytes()
            blob = torch.load(io.BytesIO(raw), weights_only=False)
        else:
            blob = torch.load(path, weights_only=False)
        net = _Net(int(blob["n_features"]))
        net.load_state_dict(blob["state"])
        return cls(blob["mean"], blob["scale"], net)
