"""Training: the pipeline a run follows, the stages it trains, and the one loop they share.

    pipeline.py     run_pipeline: tokenizer -> token cache -> generator -> samples + report (what train.py calls)
    stages.py       TokenizerStage, GeneratorStage: each turns a batch into named losses
    trainer.py      fit: the loop (lr, optimizer, EMA, NaN guard, logs, checkpoints, resume)
    token_cache.py  every training image encoded once
"""
