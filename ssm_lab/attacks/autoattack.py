"""AutoAttack (Croce & Hein, 2020) through pyautoattack, the packaged original: worst case over its sub-attacks."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ssm_models.atomic import atomic_write

from ..attack_registry import AUTOATTACK_VERSIONS
from ._runtime import Cancelled, RunContext
from .autoattack_compat import LOGGER, captured_logs, reset_dynamic_check_counter, warn_if_untested
from .base import Attack, AttackParamError

VERSIONS = (*AUTOATTACK_VERSIONS, "custom")
SUB_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
CHECK_FORWARDS = 9  # per image and sub-attack: 5 randomness + 1 range + 1 dynamic check, clean and final accuracy


class AutoAttack(Attack):
    """The parameter-free ensemble, run by pyautoattack with its own settings (APGD with 100 iterations).

    Versions: 'standard' (APGD-CE, APGD-T, FAB-T, Square 5000), 'plus' (+ restarts, APGD-DLR, FAB),
    'rand' (APGD-CE and APGD-DLR with 20-sample EOT, for randomised models), 'custom' (`sub_attacks`,
    with pyautoattack's constructor settings: APGD and FAB 5 restarts, 9 target classes).
    Each sub-attack attacks only the points still robust, starting from the clean image, exactly as
    `run_standard_evaluation` does; we call it once per sub-attack so that progress, cancel and
    `state_path` resume work and the adversarial points found so far are kept (a cancel inside a
    sub-attack loses only that sub-attack's work). Its warnings (randomness, softmax output, zero
    gradients, dynamic defence, Square beating the white-box attacks) become `result.flags`.
    """

    name = "autoattack"
    randomised = True
    summary_text = "AutoAttack via pyautoattack (original implementation): the worst case over its sub-attacks."

    def __init__(self, model, eps: float | None = None, norm: str = "Linf", version: str = "standard",
                 sub_attacks: list[str] | tuple[str, ...] | None = None, seed: int | None = 0,
                 batch_size: int = 128, state_path: str | None = None):
        super().__init__(model, eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        if version not in VERSIONS:
            raise AttackParamError(f"version must be one of {', '.join(VERSIONS)}, got {version!r}")
        if version == "custom":
            if not sub_attacks or isinstance(sub_attacks, str):
                raise AttackParamError("version='custom' needs sub_attacks, a list drawn from "
                                       + ", ".join(SUB_ATTACKS))
            unknown = [a for a in sub_attacks if a not in SUB_ATTACKS]
            if unknown:
                raise AttackParamError(f"unknown sub-attack(s) {unknown}; choose from {', '.join(SUB_ATTACKS)}")
            if len(set(sub_attacks)) != len(sub_attacks):
                raise AttackParamError(f"sub_attacks lists an attack twice: {list(sub_attacks)}")
            sub_attacks = list(sub_attacks)
        elif sub_attacks is not None:
            raise AttackParamError(f"sub_attacks is only used with version='custom', not {version!r}")
        self.version = version
        self.sub_attacks = sub_attacks
        self.state_path = None if state_path is None else str(state_path)

    def _adversary(self, model, seed: int):
        from pyautoattack import AutoAttack as Original

        warn_if_untested()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return Original(model, attacks=self.sub_attacks, device=device, eps=self.eps, norm=self.norm, seed=seed,
                        version=self.version)

    def _cost(self, n, n_classes):
        adversary = self._adversary(self.model, 0)  # reads the version's settings; runs nothing
        fwd, bwd, parts = n, 0, []  # n: our clean pass deciding which points enter the first sub-attack
        for name in adversary.attacks_to_run:
            f, b, text = _sub_attack_cost(adversary, name, n_classes)
            fwd, bwd = fwd + n * (f + CHECK_FORWARDS), bwd + n * b
            parts.append(text)
        return fwd, bwd, ("AutoAttack " + self.version + ", per image still robust when the sub-attack starts: "
                          + "; ".join(parts) + f"; +{CHECK_FORWARDS} forwards per sub-attack for checks and accuracy")

    def _run_all(self, x, y, goal, ctx: RunContext, completed) -> torch.Tensor:
        with captured_logs(ctx) as capture:
            adversary = self._adversary(ctx.model, ctx.seed)
            for attack in (adversary.apgd_targeted, adversary.fab):
                if attack.n_target_classes > ctx.n_classes - 1:
                    ctx.flag(f"target classes reduced from {attack.n_target_classes} to {ctx.n_classes - 1}: "
                             f"the model has only {ctx.n_classes} classes")
                    attack.n_target_classes = ctx.n_classes - 1
            plan = list(adversary.attacks_to_run)
            adv, robust, done = self._restore(x, y, plan, ctx)
            if robust is None:
                robust = self._clean_robust(x, y, ctx)
                if robust is None:  # cancelled in the clean pass: nothing attacked, nothing completed
                    return adv
            accuracy = self._run_plan(adversary, plan, done, x, y, adv, robust, ctx)
        finished = not ctx.cancelled and (len(done) == len(plan) or not bool(robust.any()))
        completed[:] = ~robust | finished  # a broken point stays broken: only the robust ones await attacks
        ctx.details.update(sub_attacks=plan, finished_sub_attacks=list(done), robust_accuracy_after=accuracy,
                           log=capture.lines[-200:])
        return adv

    def _clean_robust(self, x, y, ctx: RunContext) -> torch.Tensor | None:
        """Which points the model classifies correctly, the first sub-attack's input; None after a cancel."""
        try:
            with torch.no_grad():
                return torch.cat([ctx.model(x[i:i + self.batch_size]).argmax(1) for i in
                                  range(0, len(x), self.batch_size)]).eq(y)  # (N,)
        except Cancelled:
            ctx.cancelled = True
            return None

    def _run_plan(self, adversary, plan, done, x, y, adv, robust, ctx: RunContext) -> dict:
        """Each sub-attack on the points still robust; `adv`, `robust` and `done` are updated in place."""
        from pyautoattack import checks

        accuracy = {"clean": float(robust.float().mean())}
        for number, name in enumerate(plan, start=1):
            if name in done:
                continue
            todo = robust.nonzero().squeeze(1)  # (b,)
            if len(todo) == 0 or ctx.cancel_requested():
                break
            ctx.stage = f"autoattack {self.version}: {name} ({number}/{len(plan)}) on {len(todo)} image(s)"
            ctx.report()
            reset_dynamic_check_counter()
            adversary.attacks_to_run = [name]
            try:
                adv_sub, pred_sub = adversary.run_standard_evaluation(x[todo], y[todo], batch_size=self.batch_size)
            except Cancelled:
                ctx.cancelled = True
                break
            fooled = pred_sub.ne(y[todo])  # (b,)
            adv[todo[fooled]] = adv_sub[fooled].to(adv.dtype)
            robust[todo[fooled]] = False
            accuracy[name] = float(robust.float().mean())
            done.append(name)
            self._save(adv, robust, done, x, y, plan)
        if not ctx.cancelled:
            checks.check_square_sr(accuracy, logger=LOGGER)  # Square beating the white-box attacks
        return accuracy

    # ----- resume ----------------------------------------------------------------------------
    def _signature(self, x, y, plan) -> dict:
        digest = hashlib.sha256(x.cpu().numpy().tobytes() + y.cpu().numpy().tobytes()).hexdigest()
        return {"version": self.version, "plan": plan, "norm": self.norm, "eps": self.eps, "seed": self.seed,
                "batch_size": self.batch_size, "data_sha256": digest}

    def _restore(self, x, y, plan, ctx):
        if self.state_path is None or not Path(self.state_path).exists():
            return x.clone(), None, []
        from safetensors import safe_open

        with safe_open(self.state_path, framework="pt") as f:
            meta = json.loads(f.metadata().get("autoattack", "{}"))
            adv, robust = f.get_tensor("adv").to(x.device), f.get_tensor("robust").to(x.device).bool()
        expected = self._signature(x, y, plan)
        differs = [k for k in expected if meta.get(k) != expected[k]]
        if differs or adv.shape != x.shape:
            raise AttackParamError(f"state file {self.state_path} belongs to a different run (differs in: "
                                   f"{', '.join(differs) or 'shape'})")
        ctx.details["resumed_after"] = list(meta["done"])
        return adv.float(), robust, list(meta["done"])

    def _save(self, adv, robust, done, x, y, plan) -> None:
        if self.state_path is None:
            return
        from safetensors.torch import save as safetensors_bytes

        meta = {**self._signature(x, y, plan), "done": done}
        atomic_write(self.state_path, safetensors_bytes(
            {"adv": adv.detach().cpu().contiguous(), "robust": robust.cpu().to(torch.uint8)},
            metadata={"autoattack": json.dumps(meta)}))


def _sub_attack_cost(adversary, name: str, n_classes: int) -> tuple[int, int, str]:
    """Upper bound per image for one pyautoattack sub-attack (counted on pyautoattack 0.2.0, see autoattack_compat)."""
    apgd, apgd_t, fab, square = adversary.apgd, adversary.apgd_targeted, adversary.fab, adversary.square
    if name in ("apgd-ce", "apgd-dlr"):
        runs = apgd.n_restarts * (apgd.n_iter + 1) * apgd.eot_iter
        return 1 + runs, runs, f"{name} {apgd.n_restarts}x({apgd.n_iter}+1) fwd+bwd" + (
            f" x EOT {apgd.eot_iter}" if apgd.eot_iter > 1 else "")
    if name == "apgd-t":
        runs = min(apgd_t.n_target_classes, n_classes - 1) * apgd_t.n_restarts
        return 1 + runs * (apgd_t.n_iter + 2), runs * (apgd_t.n_iter + 1), (
            f"apgd-t {runs} target run(s) x ({apgd_t.n_iter}+1) fwd+bwd")
    if name == "fab":
        return (1 + fab.n_restarts * (2 * fab.n_iter + 3), fab.n_restarts * fab.n_iter * n_classes,
                f"fab {fab.n_restarts}x{fab.n_iter} steps of 2 fwd + {n_classes} bwd (full Jacobian)")
    if name == "fab-t":
        runs = min(fab.n_target_classes, n_classes - 1)  # pyautoattack runs FAB-T with one restart
        return 1 + runs * (2 * fab.n_iter + 3), runs * fab.n_iter, (
            f"fab-t {runs} target(s) x {fab.n_iter} steps of 2 fwd + 1 bwd")
    return 1 + square.n_restarts * (square.n_queries + 2), 0, f"square {square.n_queries} queries (fwd only)"
