"""Fine-tuning a pre-trained checkpoint and scoring it on a task's dev set(s).

harness.py  what every task shares: data and training subsample, model set-up, the loop, the
            result of a run (metrics.json) and its files
glue.py     GLUE and the text-classification tasks of Table 1 (sequence classification)
squad.py    SQuAD v1.1 and v2.0 (extractive question answering)
sweep.py    the learning-rate sweep: one run per rate, the best kept; what the CLI runs
cli.py      `fem finetune` and `fem finetune-squad`
"""
