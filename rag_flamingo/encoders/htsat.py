"""HTS-AT (Chen et al., ICASSP 2022): the Swin-transformer audio backbone of MS-CLAP 2023 / clapcap
and LAION-CLAP (HTSAT-tiny/base), inference only.

Why written out here instead of reusing ``transformers.models.clap.ClapAudioEncoder``: the original
checkpoints must load *strictly* under their own key names, including the persistent buffers
(``relative_position_index``, the shifted-window ``attn_mask``) and the token-semantic head
(``tscam_conv``, ``head``) that the transformers port drops or recomputes; the port also expects its
own numpy mel features. Mirroring the original module tree (``spectrogram_extractor``,
``logmel_extractor``, ``bn0``, ``patch_embed``, ``layers.i.blocks.j...``, ``norm``, ``tscam_conv``,
``head``) gives a 1:1 key match and float-rounding parity. Window attention uses
``F.scaled_dot_product_attention`` (same math as the original's explicit softmax).

Shapes (defaults = MS-CLAP / HTSAT-tiny): waveform [B, S] -> log-mel [B, 1, T, 64] -> bn0 over mel
bins -> bicubic resize of time to ``spec_size * freq_ratio`` (1024) -> folded to a 256x256 image ->
4x4 patches (64x64 tokens, dim 96) -> 4 Swin stages (dims 96/192/384/768) -> LayerNorm -> token
grouping -> mean = ``embedding`` (768-d, HTSAT's ``latent_output``).

LAION-CLAP reuse: build with ``HTSATConfig(sample_rate=48000, hop_size=480, fmax=14000, ...)``;
fusion variants can pass their own ``patch_embed`` module (called as ``patch_embed(x, **kwargs)``
with the kwargs given to ``tokens``) and feed precomputed mel via ``forward_mel``. ``tokens`` (frontend
side) and ``forward_tokens`` (the Swin network) split the model where ``runtime=openvino`` converts it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .mel import LogmelFilterBank, Spectrogram, log_mel


@dataclass(frozen=True)
class HTSATConfig:
    # audio frontend (MS-CLAP's HTSAT ignores the CLAP yaml and uses HTS-AT's own config.py values:
    # 32 kHz filter bank on 44.1 kHz audio; reproduced as released)
    sample_rate: int = 32000
    window_size: int = 1024  # n_fft
    hop_size: int = 320
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    # transformer
    spec_size: int = 256
    patch_size: int = 4
    patch_stride: tuple[int, int] = (4, 4)
    in_chans: int = 1
    num_classes: int = 527
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    htsat_window_size: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    extra: dict = field(default_factory=dict, compare=False)  # free-form notes for fingerprints

    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.mel_bins

    @property
    def num_features(self) -> int:
        return int(self.embed_dim * 2 ** (len(self.depths) - 1))

    def describe(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d


HTSAT_TINY = HTSATConfig()
HTSAT_BASE = HTSATConfig(embed_dim=128, depths=(2, 2, 12, 2), num_heads=(4, 8, 16, 32))


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B*nW, window*window, C]."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """[B*nW, window*window, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class PatchEmbed(nn.Module):
    """Non-overlapping conv patches + LayerNorm: [B, C, H, W] -> [B, H*W/p², dim]."""

    def __init__(self, img_size: int, patch_size: int, patch_stride: tuple[int, int], in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.grid_size = (img_size // patch_stride[0], img_size // patch_stride[1])
        padding = ((patch_size - patch_stride[0]) // 2, (patch_size - patch_stride[1]) // 2)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative position bias."""

    relative_position_index: torch.Tensor  # buffer (registered in __init__)

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B*nW, N, C]; mask [nW, N, N] (0 / -100) or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # [1, heads, N, N]
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias + mask.unsqueeze(1)).repeat(bw // nw, 1, 1, 1)  # window-major, like .view(B, nW, ...)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


def _shift_attention_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    img = torch.zeros((1, h, w, 1))
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    mw = window_partition(img, window).squeeze(-1)
    mask = mw.unsqueeze(1) - mw.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class SwinTransformerBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        qkv_bias: bool,
    ):
        super().__init__()
        self.input_resolution = input_resolution
        if min(input_resolution) <= window:  # window covers the whole map: no partition, no shift
            shift, window = 0, min(input_resolution)
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = _shift_attention_mask(*input_resolution, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), mask=self.attn_mask)
        y = window_reverse(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, input_resolution: tuple[int, int], dim: int):
        super().__init__()
        self.input_resolution = input_resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        qkv_bias: bool,
        downsample: bool,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim, input_resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, qkv_bias
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(input_resolution, dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class HTSAT(nn.Module):
    """HTS-AT with its torchlibrosa frontend and token-semantic head; keys match the original
    ``HTSAT_Swin_Transformer`` (eval mode: no SpecAugment, no mixup, no dropout/drop-path).

    ``forward(waveform)`` -> dict with ``embedding`` [B, num_features] (the original's
    ``latent_output``) and, when ``with_clipwise``, ``clipwise_output`` [B, num_classes].
    """

    def __init__(self, config: HTSATConfig = HTSAT_TINY, patch_embed: nn.Module | None = None):
        super().__init__()
        c = self.config = config
        self.spectrogram_extractor = Spectrogram(c.window_size, c.hop_size)
        self.logmel_extractor = LogmelFilterBank(c.sample_rate, c.window_size, c.mel_bins, c.fmin, c.fmax)
        self.bn0 = nn.BatchNorm2d(c.mel_bins)
        self.patch_embed = patch_embed or PatchEmbed(c.spec_size, c.patch_size, c.patch_stride, c.in_chans, c.embed_dim)
        grid = (c.spec_size // c.patch_stride[0], c.spec_size // c.patch_stride[1])
        self.layers = nn.ModuleList(
            BasicLayer(
                int(c.embed_dim * 2**i),
                (grid[0] // 2**i, grid[1] // 2**i),
                depth,
                c.num_heads[i],
                c.htsat_window_size,
                c.mlp_ratio,
                c.qkv_bias,
                downsample=i < len(c.depths) - 1,
            )
            for i, depth in enumerate(c.depths)
        )
        self.norm = nn.LayerNorm(c.num_features)
        sf = c.spec_size // (2 ** (len(c.depths) - 1)) // c.patch_stride[0] // c.freq_ratio
        self.tscam_conv = nn.Conv2d(c.num_features, c.num_classes, kernel_size=(sf, 3), padding=(0, 1))
        self.head = nn.Linear(c.num_classes, c.num_classes)  # in the checkpoints; unused by the tscam path

    @property
    def max_frames(self) -> int:
        return self.config.spec_size * self.config.freq_ratio

    def mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, S] -> log-mel after bn0, [B, 1, T, mel_bins], float32."""
        x = log_mel(self.spectrogram_extractor, self.logmel_extractor, waveform)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.bn0(x.transpose(1, 3)).transpose(1, 3)

    def reshape_wav2img(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, T, F] -> [B, 1, spec_size, spec_size]: bicubic resize of T (and F) then fold time."""
        c = self.config
        target_t, target_f = c.spec_size * c.freq_ratio, c.spec_size // c.freq_ratio
        t, f = x.shape[2], x.shape[3]
        if t > target_t or f > target_f:
            raise ValueError(
                f"HTSAT input of {t} frames x {f} bins exceeds {target_t} x {target_f}; "
                "crop or window the waveform first"
            )
        if t < target_t:
            x = F.interpolate(x, (target_t, f), mode="bicubic", align_corners=True)
        if f < target_f:
            x = F.interpolate(x, (x.shape[2], target_f), mode="bicubic", align_corners=True)
        b, ch, tt, ff = x.shape
        x = x.permute(0, 1, 3, 2).reshape(b, ch, ff, c.freq_ratio, tt // c.freq_ratio)
        return x.permute(0, 1, 3, 2, 4).reshape(b, ch, ff * c.freq_ratio, tt // c.freq_ratio)

    def tokens(self, mel: torch.Tensor, **patch_kwargs) -> torch.Tensor:
        """Log-mel after bn0 [B, 1, T, F] -> patch tokens [B, (spec/stride)², embed_dim]."""
        proj = self.patch_embed.proj
        assert isinstance(proj, nn.Conv2d), "patch embeds (PatchEmbed, FusionPatchEmbed) project with a Conv2d"
        return self.patch_embed(self.reshape_wav2img(mel).to(proj.weight.dtype), **patch_kwargs)

    def forward_tokens(self, x: torch.Tensor, with_clipwise: bool = False) -> dict:
        """Patch tokens -> {'embedding', 'fine_grained_embedding'[, 'clipwise_output']}: the Swin stages,
        norm and token grouping (a pure tensor function of fixed layout: what runtime=openvino converts)."""
        c = self.config
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        b, _, ch = x.shape
        down = 2 ** (len(c.depths) - 1)
        sf, st = c.spec_size // down // c.patch_stride[0], c.spec_size // down // c.patch_stride[1]
        x = x.permute(0, 2, 1).reshape(b, ch, sf, st)
        c_freq_bin = sf // c.freq_ratio
        x = x.reshape(b, ch, sf // c_freq_bin, c_freq_bin, st).permute(0, 1, 3, 2, 4).reshape(b, ch, c_freq_bin, -1)
        out = {
            "embedding": F.adaptive_avg_pool1d(x.flatten(2), 1).flatten(1),
            # LAION-CLAP's per-frame output: mean over frequency groups, each time token repeated 8*stride
            "fine_grained_embedding": x.mean(2).permute(0, 2, 1).repeat_interleave(8 * c.patch_stride[1], dim=1),
        }
        if with_clipwise:
            out["clipwise_output"] = torch.sigmoid(F.adaptive_avg_pool1d(self.tscam_conv(x).flatten(2), 1).flatten(1))
        return out

    def forward_mel(self, mel: torch.Tensor, with_clipwise: bool = False, **patch_kwargs) -> dict:
        """Log-mel after bn0 [B, 1, T, F] -> outputs (for callers that build their own mel)."""
        return self.forward_tokens(self.tokens(mel, **patch_kwargs), with_clipwise)

    def forward(self, waveform: torch.Tensor, with_clipwise: bool = False) -> dict:
        return self.forward_mel(self.mel(waveform), with_clipwise)
