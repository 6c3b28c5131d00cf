"""Training building blocks shared by the cpt and sft stages.

One job per module:

* ``data``        load local/Hub datasets and mix general-domain data in by weight
* ``tokenize``    cached, shard-by-shard, resumable tokenization of plain-text documents (CPT)
* ``packing``     document-masked packing into fixed-length rows + its collator
* ``chat``        <think> reasoning modes and the saved-checkpoint check (SFT)
* ``chat_setup``  the SFT chat template's source, special tokens, stop tokens, untrained embedding rows
* ``chat_masks``  assistant-token masks for any chat template, and the template probe
* ``sft_data``    SFT rows in real dataset formats -> conversations -> token ids + masks
* ``guards``      non-finite loss / weight fails the stage, naming the step
* ``preemption``  SIGTERM/SIGUSR1 -> every rank agrees -> checkpoint -> exit REQUEUE_EXIT_CODE
* ``checkpoints`` complete/incomplete checkpoint markers, retention, newest complete checkpoint
* ``metrics``     tokens/s and MFU in the training logs
* ``loggers``     wandb / tensorboard / none from the recipe's logging section
* ``lifecycle``   :class:`TrainingRun`, the one owner of a training stage run: setup -> train -> save -> cleanup
* ``cpt_run``     cpt's data (packed rows) and trainer (``Trainer``) over the lifecycle
* ``sft_run``     sft's data (conversations, chat template) and trainer (TRL ``SFTTrainer``) over the lifecycle
"""

from ..core.exitcodes import REQUEUE as REQUEUE_EXIT_CODE  # no heavy import: `validate` reads SFT data via sft_data

__all__ = ["REQUEUE_EXIT_CODE"]
