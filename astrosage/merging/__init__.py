"""Model merging over mergekit, in one package (the merge stage's library):

* :mod:`.check`   compatibility of the models from config/tokenizer files, before any weight is read
* :mod:`.config`  the recipe's ``merge`` section (or a raw mergekit YAML) -> a validated ``MergeConfiguration``
* :mod:`.sweep`   merge-weight sweeps scored on a dev benchmark, and the choice of the best
* :mod:`.run`     the merge stage's work: plan, check, merge (one or a sweep), outputs

The stage adapter is :mod:`astrosage.stages.merge`.
"""
