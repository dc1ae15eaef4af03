"""The finetune cases: one optimizer step of a classifier on a text backbone, JAX against PyTorch.

Three backbones, each built the same way on both sides from the same checkpoint:

    minilm-l6     BERT, 6 x 384, mean pooling            (bert.classifier / transformers.BertModel)
    mpnet-base    MPNet, 12 x 768, mean pooling          (bert.classifier / transformers.MPNetModel)
    smollm2-135m  Llama decoder, 30 x 576, last token    (llama.DecoderClassifier / transformers.LlamaModel)

plus a linear head, cross-entropy and AdamW over every parameter. Two kinds of batches:

* ``fixed``: 32 x 128 token batches (row lengths drawn from [64, 128]; the shape never changes).
* ``lengths``: 32-row batches of real fine_foods reviews, tokenised by the model's tokenizer at
  max_len 128. Each side batches the way it does in practice: JAX as `train.fit` does (length
  buckets of 16/32/64/128 tokens, `w2sjax.data.length_buckets`), PyTorch as transformers' default
  collator does (random batches, each padded to its own longest row). One timed call runs all
  the batches.

Both sides get identical token ids. PyTorch runs plain float32 and under CPU bf16 autocast, sharing
one model and optimizer (autocast is only a context); JAX runs float32 and bfloat16 matmuls with
float32 accumulation (`w2sjax.models.precision`), each with its own state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import numpy as np

MODELS = ("minilm-l6", "mpnet-base", "smollm2-135m")
_ASSETS = {"minilm-l6": "minilm-l6-v2", "mpnet-base": "mpnet-base-v2", "smollm2-135m": "smollm2-135m"}
BATCH, SEQ = 32, 128


@dataclasses.dataclass(frozen=True)
class Shape:
    """What the FLOP count needs: layers, width, FFN width, and the K/V width (GQA for Llama)."""

    layers: int
    d: int
    d_ff: int
    d_kv: int
    ffn_mats: int  # 2 for a GELU MLP, 3 for a gated (SwiGLU) one
    vocab: int

    def forward_flops(self, t: int) -> float:
        """Dense-transformer FLOPs of one sequence of ``t`` tokens (matmuls + attention scores)."""
        per_token = 2 * (2 * self.d * self.d + 2 * self.d * self.d_kv + self.ffn_mats * self.d * self.d_ff)
        return self.layers * (per_token * t + 4 * t * t * self.d)

    def train_flops(self, t: int) -> float:
        return 3 * self.forward_flops(t)


def asset_path(model: str):
    from w2sjax import assets

    return assets.fetch(_ASSETS[model])


def _gguf(path):
    from w2sjax.models.gguf import find_gguf

    return find_gguf(path)


def shape_of(model: str, path, layers: int | None = None) -> Shape:
    from w2sjax.models import bert, llama, mpnet
    from w2sjax.models.gguf import open_gguf

    if model == "smollm2-135m":
        c = llama.LlamaConfig.from_gguf(open_gguf(path))
        return Shape(layers or c.num_hidden_layers, c.hidden_size, c.intermediate_size,
                     c.num_key_value_heads * c.head_dim, 3, c.vocab_size)
    c = (bert.BertConfig if model == "minilm-l6" else mpnet.MPNetConfig).from_json(path / "config.json")
    return Shape(layers or c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.hidden_size, 2,
                 c.vocab_size)


def tokenizer_of(model: str, path):
    from w2sjax.models import bert, mpnet
    from w2sjax.models.gguf import GGUFTokenizer

    if model == "minilm-l6":
        return bert.load_tokenizer(path)
    if model == "mpnet-base":
        return mpnet.load_mpnet_tokenizer(path)
    return GGUFTokenizer.from_file(_gguf(path))


# ---------------------------------------------------------------- batches


def fixed_batches(vocab: int, pad_id: int, count: int = 8, b: int = BATCH, t: int = SEQ, seed: int = 0):
    """``count`` host batches ``(ids, mask)`` of shape ``[b, t]``, row lengths in [t/2, t]."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        lens = rng.integers(t // 2, t + 1, size=b)
        mask = (np.arange(t)[None, :] < lens[:, None]).astype(np.int32)
        ids = np.where(mask, rng.integers(1000, vocab, (b, t)), pad_id).astype(np.int32)
        out.append((ids, mask))
    return out


def real_token_ids(tokenizer, texts, count: int, b: int = BATCH, max_len: int = SEQ, seed: int = 0):
    """Token id lists of ``count * b`` texts drawn at random (without replacement) from ``texts``."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(texts), size=min(len(texts), count * b), replace=False)
    return tokenizer.token_ids([texts[i] for i in pick], max_len)


def padded_to_longest(tokenizer, ids, b: int = BATCH):
    """Consecutive ``b``-row batches, each padded to its own longest row (PyTorch's collator)."""
    out = []
    for start in range(0, len(ids) - b + 1, b):
        rows = ids[start:start + b]
        out.append(tokenizer.pad(rows, max(len(r) for r in rows)))
    return out


def bucketed(tokenizer, ids, max_len: int, b: int = BATCH, seed: int = 0):
    """``b``-row batches in `train.fit`'s length-bucketed order (`w2sjax.data.length_buckets`), one epoch."""
    from w2sjax.data import length_buckets

    lengths = np.array([len(r) for r in ids])
    plan = length_buckets.epoch_plan(np.arange(len(ids)), lengths, b, tuple(length_buckets.bucket_lengths(max_len)),
                                     seed, 0)
    return [tokenizer.pad([ids[i] for i in idx], length) for idx, length in plan]


def padded_tokens(batches) -> int:
    return int(sum(ids.size for ids, _ in batches))


# ---------------------------------------------------------------- JAX side


def jax_module(model: str, path, dtype: str, layers: int | None = None):
    import jax.numpy as jnp
    from flax import nnx

    from w2sjax.models import bert, llama, mpnet

    rngs = nnx.Rngs(0)
    dt = jnp.dtype(dtype)
    if model == "minilm-l6":
        return bert.classifier(bert.load_bert(path, num_layers=layers, dtype=dt), 2, rngs=rngs)
    if model == "mpnet-base":
        enc = mpnet.load_mpnet_encoder(path, num_layers=layers, dtype=dt, param_dtype=jnp.float32)
        return bert.classifier(enc, 2, rngs=rngs)
    decoder, _ = llama.load_llama_gguf(path, dtype=dt, param_dtype=jnp.float32)
    if layers is not None:  # the first `layers` blocks, then the final norm (same per-block work)
        decoder.layers = nnx.List(list(decoder.layers)[:layers])
    return llama.DecoderClassifier(decoder, 2, rngs=rngs)


class JaxFinetune:
    """The library's train step (`train.train_step`, jitted with donation) on host batches.

    Calling it runs one step on each of ``batches`` in turn, moving each host batch to the devices
    first. ``traces`` counts how often the step was traced (compiles).

    ``loop=True`` runs the batches as `fit` does instead: stacked ``[K, B, ...]`` and trained in
    one call of `train.train_loop` (batches of one shape only). One program then runs K steps, so
    the host's dispatch, and XLA:CPU's fresh temporary buffers of each call, are paid once per K.
    ``grad_norm_each_step=True`` makes that loop compute the gradient-norm metric on every step,
    as it did before 2026-12-08, instead of on its last step only.
    """

    def __init__(self, module, batches, *, lr: float = 1e-5, loop: bool = False, grad_norm_each_step: bool = False):
        import jax

        from w2sjax import parallel, train

        self.train, self.jax = train, jax
        b = batches[0][0].shape[0]
        cfg = train.TrainConfig(batch_size=b, lr=lr)
        self.mesh = parallel.make_mesh()
        model, state = train.init_state(module, "all")
        shardings = train.state_shardings(self.mesh, state)
        self.state = train.place(state, shardings)
        self.settings = train.place(train.step_settings(cfg, 1000, "xent"), parallel.replicated(self.mesh))
        self.traces = 0

        def count_traces(step):  # also train_loop's step_wrapper below: one object, so one program
            def traced(*a):
                self.traces += 1  # runs only while tracing
                # (state, batch, rng, settings[, measure]): the loop as it was before it measured
                # the gradient norm on its last step only, for an A/B in one process
                return step(*a[:4], True) if grad_norm_each_step else step(*a)
            return traced

        step_fn = functools.partial(train.train_step, model=model, mesh=self.mesh)
        self.step = train.jit_train_step(count_traces(step_fn), self.mesh, shardings)
        self.rng = train.place(jax.random.key_data(jax.random.key(0)), parallel.replicated(self.mesh))
        labels = np.random.default_rng(1).integers(0, 2, b)
        self.batches = [{"inputs": {"input_ids": ids, "attention_mask": mask},
                         "labels": np.eye(2, dtype=np.float32)[labels], "weights": np.ones(b, np.float32)}
                        for ids, mask in batches]
        self.steps = 0
        self.loop = None
        if loop:
            from w2sjax.data import feed

            if len({ids.shape for ids, _ in batches}) != 1:
                raise ValueError("loop=True: every batch must have the same shape (one train_loop program)")
            stacked = jax.tree.map(lambda *a: np.stack(a), *self.batches)
            self.loop = (feed.to_global_stacked(self.mesh, stacked),
                         train.place(np.int32(len(self.batches)), parallel.replicated(self.mesh)),
                         dict(model=model, mesh=self.mesh, step_wrapper=count_traces))

    def __call__(self):
        if self.loop is not None:
            stacked, count, kwargs = self.loop
            self.state, m = self.train.train_loop(self.state, stacked, count, self.rng, self.settings, **kwargs)
            self.steps += len(self.batches)
            self.jax.block_until_ready(m)
            return
        for batch in self.batches:
            self.state, m = self.step(self.state, self.train.to_global(self.mesh, batch), self.rng, self.settings)
            self.steps += 1
        self.jax.block_until_ready(m)


# ---------------------------------------------------------------- PyTorch side


def torch_model(model: str, path, layers: int | None = None):
    """The transformers backbone in float32, and how it pools ``(hidden, mask) -> [B, D]``."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # the unused-pooler load report is noise here
    kw = {"num_hidden_layers": layers} if layers else {}
    if model == "minilm-l6":
        net = transformers.BertModel.from_pretrained(str(path), add_pooling_layer=False,
                                                     attn_implementation="sdpa", **kw)
    elif model == "mpnet-base":  # transformers has no SDPA path for MPNet: its eager attention
        net = transformers.MPNetModel.from_pretrained(str(path), add_pooling_layer=False, **kw)
    else:  # dequantised to float32 on load; transformers then refuses .float() on it
        gguf = _gguf(path)
        net = transformers.LlamaModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                      attn_implementation="sdpa", torch_dtype=torch.float32)
    if model != "smollm2-135m":
        net = net.float()
    elif layers:  # the GGUF load ignores num_hidden_layers: keep the first blocks, as the JAX side does
        net.layers = torch.nn.ModuleList(list(net.layers)[:layers])
        net.config.num_hidden_layers = layers

    def mean(hidden, mask):
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def last(hidden, mask):
        idx = mask.sum(1) - 1  # right padding
        return hidden[torch.arange(hidden.shape[0]), idx]

    return net, (last if model == "smollm2-135m" else mean)


def autocast(dtype: str):
    import torch

    return contextlib.nullcontext() if dtype == "float32" else torch.autocast("cpu", dtype=torch.bfloat16)


class TorchFinetune:
    """A plain PyTorch finetune step (AdamW, cross-entropy) over ``batches``, optionally under autocast.

    Sides of one model share ``shared`` (backbone, head, optimizer): autocast is only a context.
    """

    def __init__(self, shared, batches, dtype: str):
        import torch

        self.torch = torch
        self.net, self.pool, self.head, self.opt = shared
        self.dtype = dtype
        labels = torch.from_numpy(np.random.default_rng(1).integers(0, 2, batches[0][0].shape[0]))
        self.batches = [(torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64)), labels)
                        for ids, mask in batches]

    @staticmethod
    def shared(model: str, path, layers: int | None = None, lr: float = 1e-5):
        import torch

        net, pool = torch_model(model, path, layers)
        # Dropout off, as w2sjax's models (which have none) and the sweep's baseline train: with it on,
        # PyTorch's step also draws its dropout masks (bernoulli_ was 28% of the MPNet-base step's CPU time).
        net.eval()
        head = torch.nn.Linear(net.config.hidden_size, 2)
        opt = torch.optim.AdamW(list(net.parameters()) + list(head.parameters()), lr=lr)
        return net, pool, head, opt

    def __call__(self):
        F = self.torch.nn.functional
        for ids, mask, labels in self.batches:
            self.opt.zero_grad(set_to_none=True)
            with autocast(self.dtype):
                hidden = self.net(input_ids=ids, attention_mask=mask).last_hidden_state
                logits = self.head(self.pool(hidden, mask))
                loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
            self.opt.step()
