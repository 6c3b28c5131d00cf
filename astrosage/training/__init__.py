"""Training building blocks shared by the cpt and sft stages.

One job per module:

* ``data``        load local/Hub datasets and mix general-domain data in by weight
* ``tokenize``    cached, shard-by-shard, resumable tokenization of plain-text documents (CPT)
* ``packing``     document-masked packing into fixed-length rows + its collator
* ``chat``        chat-template / EOS consistency checks and <think> reasoning modes (SFT)
* ``preemption``  SIGTERM/SIGUSR1 -> every rank agrees -> checkpoint -> exit REQUEUE_EXIT_CODE
* ``checkpoints`` complete/incomplete checkpoint markers, retention, newest complete checkpoint
* ``metrics``     tokens/s and MFU in the training logs
* ``loggers``     wandb / tensorboard / none from the recipe's logging section
* ``harness``     the glue both stages share: TrainingArguments from the recipe, resume, final save
"""

from .preemption import REQUEUE_EXIT_CODE

__all__ = ["REQUEUE_EXIT_CODE"]
