"""A run's state on disk: starting or resuming the run folder, checkpoints (every rank's
accelerate state plus the policy as a model folder, renamed into place once complete, so a
kill at any moment leaves the previous ones intact), and the final model folder."""

from __future__ import annotations

import copy
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from maple_data.durable import (
    PARTIAL,
    Journal,
    atomic_folder,
    fsync_tree,
    partial_path,
    raise_write_failure,
    swap_into_place,
    write_atomic,
)
from maple_data.models.families import ModelFamily
from maple_data.models.omni_folder import (
    PROCESSOR_FILES,
    copy_processor_files,
    missing_model_files,
    missing_processor_files,
    save_omni,
)
from maple_rl.errors import MissingFile
from maple_rl.training.config import TrainConfig, to_dict
from maple_rl.training.run_folder import (
    CHECKPOINT_MARKER,
    CHECKPOINTS,
    CONFIG,
    FINAL,
    METRICS,
    PROCESSOR,
    checkpoints,
    clear_run,
)


class StepCounter:
    """The step number, checkpointed with the run."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


class Checkpoints:
    """Checkpoints of the run in ``config.output_dir``. The state written is whatever was
    registered with ``acc.register_for_checkpointing`` (plus model, optimizer, scheduler and
    RNG states); ``policy()`` is the unwrapped policy."""

    def __init__(self, config: TrainConfig, acc, counter: StepCounter, family: ModelFamily | None,
                 policy: Callable[[], torch.nn.Module]) -> None:
        self.config, self.acc, self.counter, self.family, self.policy = config, acc, counter, family, policy
        self.out = Path(config.output_dir)

    def start(self, resume_run: bool) -> None:
        """Resume from the newest complete checkpoint, or clear the folder for a new run
        (metrics.jsonl emptied, config.json written); then keep the processor files."""
        if resume_run:
            self._resume()
        elif self.acc.is_main_process:
            clear_run(self.out)
            write_atomic(self.out / METRICS, "")
            write_atomic(self.out / CONFIG, json.dumps(to_dict(self.config), indent=1))
        if self.acc.is_main_process and not (self.out / PROCESSOR).is_dir():
            self._keep_processor_files()
        self.acc.wait_for_everyone()

    def _keep_processor_files(self) -> None:
        """Copy the model's tokenizer and processor files into the run folder when the run
        starts, so the model folders it writes are complete even if the source goes away
        meanwhile; a source that lacks one fails here, before any training."""
        source = Path(self.config.model.path)
        if not source.is_dir():  # a hub id: its cached snapshot
            from huggingface_hub import snapshot_download

            source = Path(snapshot_download(self.config.model.path, allow_patterns=list(PROCESSOR_FILES)))
        missing = missing_processor_files(source, self.family)
        if missing:
            raise MissingFile(f"the model {self.config.model.path} lacks {', '.join(missing)}: a run could not "
                                    f"write a model folder that loads (copy them into it, or use a complete model)")
        with atomic_folder(self.out / PROCESSOR) as tmp:
            copy_processor_files(source, tmp, None)

    def _resume(self) -> None:
        found = checkpoints(self.out)
        if not found:
            raise MissingFile(f"nothing to resume: no complete checkpoint in {self.out / CHECKPOINTS}")
        self.acc.load_state(str(found[-1]))
        if self.acc.is_main_process:
            print(f"resuming from {found[-1]} (step {self.counter.step})", file=sys.stderr)
            for stale in (self.out / CHECKPOINTS).glob(f".*{PARTIAL}"):
                shutil.rmtree(stale, ignore_errors=True)  # a write interrupted by a kill
            path = self.out / METRICS  # drop metrics logged after the checkpoint (they are redone)
            kept = [m for m in Journal.read(path) if m.get("step", 0) <= self.counter.step]
            write_atomic(path, "".join(json.dumps(m) + "\n" for m in kept))

    def save(self) -> Path:
        """Every rank writes its state into ``checkpoints/.step-N.partial``; the main
        process adds the policy as a model folder (``model/``, unless ``checkpoint_model`` is
        off), the marker, and renames the folder into place."""
        path = self.out / CHECKPOINTS / f"step-{self.counter.step:06d}"
        tmp = partial_path(path)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        self.acc.wait_for_everyone()
        try:
            self.acc.save_state(str(tmp))
            self.acc.wait_for_everyone()
            if self.acc.is_main_process:
                if self.config.checkpoint_model:
                    self.write_model(tmp / "model")
                write_atomic(tmp / CHECKPOINT_MARKER, json.dumps({"step": self.counter.step}))
                fsync_tree(tmp)
                swap_into_place(tmp, path)
        except BaseException as exc:  # e.g. a full disk, which torch reports as "unexpected pos ..."
            try:
                raise_write_failure(exc, path)  # checks the free space before the torn write is removed
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self.acc.wait_for_everyone()
        return path

    def save_final(self) -> Path:
        """``final/``: the policy as a model folder (:meth:`write_model`), written atomically."""
        final = self.out / FINAL
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            with atomic_folder(final) as tmp:
                self.write_model(tmp)
        self.acc.wait_for_everyone()
        return final

    def write_model(self, folder: Path) -> None:
        """A complete model folder of the current policy in ``folder`` (main process): with
        LoRA, the adapters merged into the base weights and the adapter alone in
        ``adapter/``; plus the tokenizer and processor files, in the layout both transformers
        and vLLM load (an omni Thinker inside its family's full config:
        ``maple_data.models.omni_folder``)."""
        policy = self.policy()
        if self.config.model.lora.rank:
            policy.save_pretrained(folder / "adapter")
            policy = copy.deepcopy(policy).merge_and_unload()
        save_omni(policy, folder)
        copy_processor_files(self.out / PROCESSOR, folder, self.family)
        missing = missing_model_files(folder, self.family)
        if missing:  # never report a model folder that would not load
            raise MissingFile(f"the model folder written to {folder} lacks {', '.join(missing)}")
