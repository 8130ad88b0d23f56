"""A model's cache arithmetic, mixed into ModelConfig: the KV cache per token and per sequence, windows' caps, and
the fixed state a linear-attention layer keeps per sequence instead of a cache that grows."""


class CacheMath:
    """Needs ModelConfig's fields and its window(), is_linear() and bits()."""

    # --- linear attention's dimensions and state ---
    @property
    def linear_key_width(self) -> int:
        return self.linear_k_heads * self.linear_k_dim

    @property
    def linear_value_width(self) -> int:
        return self.linear_v_heads * self.linear_v_dim

    @property
    def linear_conv_channels(self) -> int:
        """The convolution runs over q, k and v."""
        return 2 * self.linear_key_width + self.linear_value_width

    @property
    def linear_layers(self) -> int:
        return sum(1 for i in range(self.n_layers) if self.is_linear(i))

    @property
    def state_bytes_per_sequence(self) -> float:
        """What the linear-attention layers keep per sequence, whatever its length: each value head's [key dim x
        value dim] state in state_dtype, and the convolution's last linear_conv - 1 inputs in `dtype`."""
        if not self.has_linear:
            return 0.0
        state = self.linear_v_heads * self.linear_k_dim * self.linear_v_dim * self.bits(self.state_dtype) / 8
        conv = self.linear_conv_channels * (self.linear_conv - 1) * self.bits(self.dtype) / 8
        return self.linear_layers * (state + conv)

    def kv_copies(self, shards: int) -> int:
        """Copies of each kv head when a group of `shards` devices splits the heads and there are fewer kv heads
        than devices: each is repeated so that every device holds the one its query heads read, as serving
        engines do."""
        if self.is_mla or shards <= self.n_kv_heads or shards % self.n_kv_heads:
            return 1
        return shards // self.n_kv_heads

    # --- KV cache ---
    @property
    def kv_values_per_layer(self) -> int:
        """Cached values per token and layer: K and V per kv head, or MLA's latent plus its rotary key."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.n_kv_heads * self.head_dim

    @property
    def kv_bytes_per_value(self) -> float:
        return self.bits(self.kv) / 8

    @property
    def kv_layer_bytes(self) -> float:
        """Bytes a token adds to one layer's cache: its K and V (or latent), and the sparse-attention indexer's key
        (index_dim fp8 values and a float32 scale per 128)."""
        index = self.index_dim + 4 * -(-self.index_dim // 128) if self.index_topk else 0
        return self.kv_values_per_layer * self.kv_bytes_per_value + index

    @property
    def kv_bytes_per_token(self) -> float:
        """Bytes per token of context, over the full-attention layers (windowed layers stop growing: see
        kv_window_bytes_per_sequence)."""
        full = sum(1 for i in range(self.n_layers) if not self.window(i) and not self.is_linear(i))
        return self.kv_layer_bytes * full

    def kv_bytes(self, context: int) -> float:
        """Bytes of one sequence's cache at `context` tokens (linear-attention layers' fixed state included)."""
        per_layer = self.kv_layer_bytes
        return sum(per_layer * (min(self.window(i), context) if self.window(i) else context)
                   for i in range(self.n_layers) if not self.is_linear(i)) + self.state_bytes_per_sequence

    def kv_read_fraction(self, context: int) -> float:
        """The share of a sequence's cache a decode step reads: all of it, but under sparse attention every index key
        and only the index_topk chosen latent rows (in each layer)."""
        if not self.index_topk or context <= self.index_topk:
            return 1.0
        index = self.kv_layer_bytes - self.kv_values_per_layer * self.kv_bytes_per_value
        read = context * index + self.index_topk * (self.kv_layer_bytes - index)
        return read / (context * self.kv_layer_bytes)

    @property
    def kv_window_bytes_per_sequence(self) -> float:
        """The cap of the windowed layers' cache, per sequence."""
        per_layer = self.kv_layer_bytes
        return sum(per_layer * self.window(i) for i in range(self.n_layers)
                   if self.window(i) and not self.is_linear(i))
