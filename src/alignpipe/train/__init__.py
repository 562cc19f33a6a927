"""Training stages built on TRL trainers: ``alignpipe.train.sft`` (supervised fine-tuning)."""
