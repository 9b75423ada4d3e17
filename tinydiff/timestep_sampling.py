"""Importance sampling of training timesteps (improved DDPM, Nichol and Dhariwal 2021, sec. 3.3).

L_vlb is the sum of T terms of very different size; drawing t uniformly makes its one-sample
estimate noisy. `LossSecondMomentResampler` draws t with p_t proportional to
sqrt(E[L_t^2]) over the last `history_per_term` losses seen at t, and weights each sample
by 1 / (T p_t) so the estimate of the sum stays unbiased. Until every t has a full history
it draws uniformly (all weights 1), as improved-diffusion does.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class LossSecondMomentResampler:
    """p_t = (1 - uniform_prob) sqrt(E[L_t^2]) / sum + uniform_prob / T once warmed up."""

    def __init__(self, num_timesteps: int, history_per_term: int = 10,
                 uniform_prob: float = 0.001) -> None:
        if history_per_term < 1:
            raise ValueError(f"history_per_term must be >= 1, got {history_per_term}")
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must lie in [0, 1], got {uniform_prob}")
        self.num_timesteps = int(num_timesteps)
        self.history_per_term = int(history_per_term)
        self.uniform_prob = float(uniform_prob)
        self.loss_history = np.zeros((self.num_timesteps, self.history_per_term))
        self.loss_counts = np.zeros(self.num_timesteps, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool(np.all(self.loss_counts == self.history_per_term))

    def probabilities(self) -> np.ndarray:
        """(T,) probabilities of drawing each timestep."""
        if not self.warmed_up():
            return np.full(self.num_timesteps, 1.0 / self.num_timesteps)
        weights = np.sqrt(np.mean(self.loss_history**2, axis=-1))
        weights = weights / weights.sum() * (1.0 - self.uniform_prob)
        return weights + self.uniform_prob / self.num_timesteps

    def sample(self, batch_size: int,
               generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(t (N,) int64, weights (N,) float64 = 1 / (T p_t))."""
        probabilities = self.probabilities()
        t = generator.choice(self.num_timesteps, size=batch_size, p=probabilities)
        return t.astype(np.int64), 1.0 / (self.num_timesteps * probabilities[t])

    def update(self, t: np.ndarray, losses: np.ndarray) -> None:
        """Record each sample's loss at its timestep, keeping the last `history_per_term`."""
        t, losses = np.asarray(t), np.asarray(losses, dtype=np.float64)
        if t.shape != losses.shape or t.ndim != 1:
            raise ValueError(f"t and losses must both be (N,), got {t.shape} and {losses.shape}")
        if not np.all(np.isfinite(losses)):
            raise ValueError("losses must be finite")
        for step, loss in zip(t.tolist(), losses.tolist()):
            count = self.loss_counts[step]
            if count == self.history_per_term:  # full: drop the oldest
                self.loss_history[step, :-1] = self.loss_history[step, 1:]
                self.loss_history[step, -1] = loss
            else:
                self.loss_history[step, count] = loss
                self.loss_counts[step] = count + 1

    def state_dict(self) -> dict[str, Any]:
        return {"loss_history": self.loss_history.copy(), "loss_counts": self.loss_counts.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        history, counts = np.asarray(state["loss_history"]), np.asarray(state["loss_counts"])
        if history.shape != self.loss_history.shape or counts.shape != self.loss_counts.shape:
            raise ValueError(f"resampler state has history {history.shape}, expected "
                             f"{self.loss_history.shape}")
        self.loss_history, self.loss_counts = history.astype(np.float64), counts.astype(np.int64)
