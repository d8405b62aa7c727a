"""Logical axis names used by every parameter and block-boundary activation.

Parameters and activations get separate names so that a rule table can shard
weights over `fsdp` while activations keep their embed dimension whole.
The rule table mapping these names to mesh axes lives in `lm.parallel.sharding`.
"""

# Parameter axes.
EMBED = "embed"          # model width D
MLP = "mlp"              # feed-forward width F
HEADS = "heads"          # query heads N
KV_HEADS = "kv_heads"    # key/value heads K
HEAD_DIM = "head_dim"    # per-head width H
VOCAB = "vocab"          # vocabulary V
LAYERS = "layers"        # stacked layer axis under nn.scan
POSITION = "position"    # learned position table rows
NORM = "norm"            # norm scale / bias vectors

# Activation axes.
ACT_BATCH = "act_batch"
ACT_LENGTH = "act_length"
ACT_EMBED = "act_embed"
ACT_HEADS = "act_heads"
ACT_KV_HEADS = "act_kv_heads"
ACT_HEAD_DIM = "act_head_dim"
ACT_MLP = "act_mlp"
ACT_VOCAB = "act_vocab"
