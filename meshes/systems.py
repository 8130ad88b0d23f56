"""Hardware systems as data. Every figure carries its source; ../shared/reference/hardware.md collects them.

NVIDIA's headline FP16/FP8 figures assume 2:4 sparsity: the peaks here are the dense ones (half).
float32 matmuls run as TF32 on tensor cores, at half the bf16 rate on Hopper and Blackwell.
Bandwidths are bytes/s, one direction. Prices are USD per chip-hour, dated defaults that `--price` overrides.
"""

import dataclasses
from dataclasses import dataclass

from base.inputs import ConfigError, is_number


@dataclass(frozen=True)
class Chip:
    name: str
    peak_flops: dict  # dtype name -> dense FLOP/s
    hbm_bytes: float  # usable HBM capacity, bytes
    hbm_bw: float  # HBM bandwidth, bytes/s
    scale_up_bw: float  # NVLink per direction per chip, bytes/s
    scale_out_bw: float  # InfiniBand/Ethernet NIC per chip, bytes/s
    # Per-hop latency of a collective step, seconds. Assumed orders of magnitude (NCCL's tuning model uses about a
    # microsecond per NVLink step and several per network step), not measured figures: they matter only for
    # small messages, and each collective's time in the output shows them.
    scale_up_latency: float = 1e-6
    scale_out_latency: float = 5e-6
    compiler: str = "gpu"  # the real compiler for this chip: "gpu" (XLA GPU, CUDA), "tpu" (libtpu), or "cpu" where
    #   neither targets it (AMD GPUs; TPUs the pinned libtpu does not know): emulated CPU devices, its figures
    rates: str = ""  # its achieved-rate file, meshes/rates/<rates>.toml (tracer.rates); "" where none is published
    source: str = ""  # where its figures come from, with dates (`tracer systems` lists them)

    def flops_for(self, dtype: str) -> float:
        if dtype not in self.peak_flops:
            raise ConfigError(f"{self.name} has no {dtype} peak; known: {', '.join(self.peak_flops)}")
        return self.peak_flops[dtype]


@dataclass(frozen=True)
class System:
    name: str
    chip: Chip
    n_chips: int
    domain_size: int  # chips in one scale-up (NVLink) domain
    usd_per_chip_hour: float
    price_note: str  # where the default price comes from, and its date
    description: str
    tpu_topology: str | None = None  # libtpu's name for the slice, e.g. "v5e:2x4"

    def node_of(self, device: int) -> int:
        """Scale-up domain of the device at position `device` in the mesh's device order."""
        return device // self.domain_size

    @property
    def hbm_total_bytes(self) -> float:
        return self.n_chips * self.chip.hbm_bytes


TB, GB = 1e12, 1e9

# H100 SXM: 989 TFLOP/s bf16 dense, 1979 fp8 and int8 dense; 80 GB HBM3 at 3.35 TB/s; NVLink4 18 links x 25 GB/s =
# 450 GB/s per direction; ConnectX-7 NDR 400 Gb/s = 50 GB/s per GPU (NVIDIA H100 datasheet; scaling-book gpus.md).
H100 = Chip("H100 SXM", {"bfloat16": 989e12, "float8": 1979e12, "int8": 1979e12, "float32": 989e12 / 2},
            hbm_bytes=80 * GB, hbm_bw=3.35 * TB, scale_up_bw=450 * GB, scale_out_bw=50 * GB, rates="h100",
            source="NVIDIA H100 datasheet; scaling-book gpus.md")
# H200 SXM: H100 compute; 141 GB HBM3e at 4.8 TB/s (NVIDIA H200 datasheet).
H200 = dataclasses.replace(H100, name="H200 SXM", hbm_bytes=141 * GB, hbm_bw=4.8 * TB, rates="h200",
                           source="NVIDIA H200 datasheet (H100 compute)")
# B200 (HGX): 2.25 PFLOP/s bf16 dense, 4.5 fp8 and int8, 9 fp4; 180 GB usable HBM3e at 8 TB/s; NVLink5 18 x 50 =
# 900 GB/s per direction (NVIDIA DGX B200 datasheet; glennklockwood.com B200 page).
B200 = Chip("B200", {"bfloat16": 2250e12, "float8": 4500e12, "int8": 4500e12, "float4": 9000e12,
                     "float32": 2250e12 / 2},
            hbm_bytes=180 * GB, hbm_bw=8.0 * TB, scale_up_bw=900 * GB, scale_out_bw=50 * GB, rates="b200",
            source="NVIDIA DGX B200 datasheet; glennklockwood.com B200 page")
# B200 inside GB200 NVL72: 2.5 PFLOP/s bf16 dense, 5 fp8, 10 fp4; ~186 GB HBM3e (13.4 TB / 72) at 8 TB/s;
# NVLink5 900 GB/s per direction across all 72 GPUs (NVIDIA GB200 NVL72 page; aiwiki GB200 NVL72).
GB200 = Chip("B200 (GB200)", {"bfloat16": 2500e12, "float8": 5000e12, "int8": 5000e12, "float4": 10000e12,
                             "float32": 2500e12 / 2},
             hbm_bytes=186 * GB, hbm_bw=8.0 * TB, scale_up_bw=900 * GB, scale_out_bw=50 * GB, rates="gb200",
             source="NVIDIA GB200 NVL72 page; aiwiki GB200 NVL72")

# Blackwell Ultra: B300 (HGX) 2.25 PFLOP/s bf16, 4.5 fp8, 13 NVFP4 dense (glennklockwood.com B300; fibermall.com HGX
# B300 table, halved from sparse); in GB300 NVL72 2.5 bf16, 5 fp8, 15 NVFP4 dense (NVIDIA technical blog "Inside
# NVIDIA Blackwell Ultra", 2025); INT8 cut to ~0.15-0.165 POPS (verda.com GB300 architecture); 288 GB HBM3e (279
# usable in the NVL72) at 8 TB/s; NVLink5 900 GB/s per direction; ConnectX-8 800 Gb/s = 100 GB/s per GPU.
B300 = Chip("B300", {"bfloat16": 2250e12, "float8": 4500e12, "int8": 150e12, "float4": 13000e12,
                     "float32": 2250e12 / 2}, hbm_bytes=288 * GB, hbm_bw=8.0 * TB, scale_up_bw=900 * GB,
            scale_out_bw=100 * GB, rates="b300",
            source="glennklockwood.com B300; fibermall.com HGX B300 (sparse, halved); verda.com (INT8, NVLink); "
                   "acecloud.ai (288 GB, 800 Gb/s NIC)")
GB300 = Chip("B300 (GB300)", {"bfloat16": 2500e12, "float8": 5000e12, "int8": 165e12, "float4": 15000e12,
                             "float32": 2500e12 / 2}, hbm_bytes=279 * GB, hbm_bw=8.0 * TB, scale_up_bw=900 * GB,
             scale_out_bw=100 * GB, rates="gb300",
             source="NVIDIA technical blog, Inside NVIDIA Blackwell Ultra (15 PF dense NVFP4); verda.com GB300 NVL72 "
                    "(bf16, fp8, INT8); hardware.md (279 GB usable)")

# Chips without published achieved rates here: priced at their peaks (the output says so) until a measurement or
# `tracer calibrate` gives them a rates file.
# H800 SXM: the H100's GPU (compute, 80 GB at 3.35 TB/s) with NVLink cut to 400 GB/s both ways, 200 per direction
# (philisun.com H800 vs H100 analysis). H20: 148 TFLOP/s bf16 and 296 fp8 dense, 96 GB HBM3 at 4.0 TB/s, NVLink
# 900 GB/s both ways (tweaktown.com, 2024-01; zangshuxian.com). Scale-out: HGX's 400 Gb/s NIC per GPU (assumed).
H800 = dataclasses.replace(H100, name="H800 SXM", scale_up_bw=200 * GB, rates="",
                           source="H100 compute and HBM; NVLink 400 GB/s bidirectional (philisun.com, H800 vs H100)")
H20 = Chip("H20", {"bfloat16": 148e12, "float8": 296e12, "int8": 296e12, "float32": 74e12}, hbm_bytes=96 * GB,
           hbm_bw=4.0 * TB, scale_up_bw=450 * GB, scale_out_bw=50 * GB,
           source="tweaktown.com, 2024-01 (96 GB HBM3 at 4.0 TB/s, NVLink 900 GB/s); zangshuxian.com (148 TFLOP/s "
                  "fp16 dense, 296 int8); fp8 taken as the int8 rate, as on other Hoppers")
# AMD Instinct (8 GPUs a node, fully connected by 7 Infinity Fabric links a GPU). No compiler targets AMD here: the
# steps compile on emulated CPU devices with these figures.
# MI300X: matrix BF16 1307.4, FP8 and INT8 2614.9 TFLOP/s dense (2048 and 4096 FLOPs a clock a CU x 304 CUs x 2.1
# GHz), TF32 half of bf16; 192 GB HBM3 at 5.3 TB/s; 7 links of 128 GB/s both ways = 448 GB/s per direction (AMD ROCm
# docs, MI300 microarchitecture, docs-6.2.2, 2024-09-11). MI325X: the same compute die; 256 GB HBM3E at 6.0 TB/s
# (ROCm GPU specifications; Vultr docs, 2026-03-02). MI355X: FP8 and INT8 ~5033 TFLOP/s dense (8192 FLOPs a clock a
# CU x 256 CUs x 2.4 GHz, ISSCC 2026 report), bf16 half of it, MXFP4 ~10 PFLOP/s dense; 288 GB HBM3E at 8 TB/s
# (theregister.com, 2025-06-12); ~153.6 GB/s both ways a link (humeconsulting.co), 7 links assumed as on MI300X.
# Scale-out: a 400 Gb/s NIC per GPU (assumed; not found in a stored source).
MI300X = Chip("AMD Instinct MI300X", {"bfloat16": 1307.4e12, "float8": 2614.9e12, "int8": 2614.9e12,
                                      "float32": 653.7e12}, hbm_bytes=192 * GB, hbm_bw=5.3 * TB,
              scale_up_bw=448 * GB, scale_out_bw=50 * GB, compiler="cpu",
              source="AMD ROCm docs, MI300 microarchitecture (docs-6.2.2, 2024-09-11)")
MI325X = dataclasses.replace(MI300X, name="AMD Instinct MI325X", hbm_bytes=256 * GB, hbm_bw=6.0 * TB,
                             source="the MI300X's compute; ROCm GPU specifications and Vultr docs, 2026-03-02 "
                                    "(256 GB HBM3E at 6.0 TB/s)")
MI355X = Chip("AMD Instinct MI355X", {"bfloat16": 2516.6e12, "float8": 5033.2e12, "int8": 5033.2e12,
                                      "float4": 10066.4e12, "float32": 1258.3e12}, hbm_bytes=288 * GB,
              hbm_bw=8.0 * TB, scale_up_bw=7 * 76.8 * GB, scale_out_bw=50 * GB, compiler="cpu",
              source="ISSCC 2026 report (FP8 per CU); theregister.com, 2025-06-12 (288 GB at 8 TB/s, 10 PF FP4); "
                     "humeconsulting.co (xGMI link)")
# TPU v7 (Ironwood): 2307 TFLOP/s bf16, 4614 fp8; 192 GiB HBM (206 GB) at ~7.37 TB/s; ICI 1.2 TB/s both ways, 600
# per direction; 9,216 chips a pod (Google Cloud TPU7x docs; Hot Chips 2025 coverage, mattfife.com; HPCwire
# summary). The pinned libtpu does not know it ("Invalid TPU external name: TPU v7x"): emulated CPU devices.
V7X = Chip("TPU v7x (Ironwood)", {"bfloat16": 2307e12, "float8": 4614e12, "float32": 2307e12}, hbm_bytes=206 * GB,
           hbm_bw=7.37 * TB, scale_up_bw=600 * GB, scale_out_bw=3.125 * GB, compiler="cpu",
           source="Google Cloud TPU7x docs (bf16, HBM, pod); Hot Chips 2025 coverage (HBM bandwidth); HPCwire "
                  "summary (ICI)")

# TPUs (../shared/reference/hardware.md; Google Cloud TPU docs; scaling-book tpus.md). A slice is one ICI domain: a
# collective along a torus axis with wraparound uses the links both ways, so a chip's ring bandwidth is twice its
# per-link one-way figure. No fp8 on these chips; default-precision f32 matmuls run as one bf16 pass on the MXU.
# Scale-out (DCN) joins slices, which no system here does: the figure is the v5e's ~25 Gb/s per chip.
# v5e: 197 TFLOP/s bf16, 394 int8; 16 GB HBM2e at 819 GB/s; ICI 4 links x 45 GB/s one way.
V5E = Chip("TPU v5e", {"bfloat16": 197e12, "int8": 394e12, "float32": 197e12}, hbm_bytes=16 * GB, hbm_bw=0.82 * TB,
           scale_up_bw=2 * 45 * GB, scale_out_bw=3.125 * GB, compiler="tpu", source="Google Cloud TPU v5e docs")
# v5p: 459 TFLOP/s bf16, 918 int8; 95 GB HBM2e at 2.76 TB/s; ICI 6 links x 90 GB/s one way (3D torus).
V5P = Chip("TPU v5p", {"bfloat16": 459e12, "int8": 918e12, "float32": 459e12}, hbm_bytes=95 * GB, hbm_bw=2.76 * TB,
           scale_up_bw=2 * 90 * GB, scale_out_bw=3.125 * GB, compiler="tpu", source="Google Cloud TPU v5p docs")
# v6e (Trillium): 918 TFLOP/s bf16, 1836 int8; 32 GB HBM at 1.64 TB/s; ICI 4 links x 90 GB/s one way.
V6E = Chip("TPU v6e", {"bfloat16": 918e12, "int8": 1836e12, "float32": 918e12}, hbm_bytes=32 * GB,
           hbm_bw=1.64 * TB, scale_up_bw=2 * 90 * GB, scale_out_bw=3.125 * GB, compiler="tpu",
           source="Google Cloud TPU v6e docs")
TPU_PRICE = {"TPU v5e": (1.20, "GCP list, Feb 2025"), "TPU v5p": (4.20, "GCP list, Feb 2025"),
             "TPU v6e": (2.70, "GCP on demand, Dec 2024")}


def _domain(name: str, chip: Chip, n: int, price: float, note: str, description: str) -> System:
    """n chips in one scale-up domain, at `price` USD per chip-hour (`note`: where it comes from)."""
    return System(name, chip, n, n, price, note, description)


def _tpu(name: str, chip: Chip, n: int, topology: str, description: str) -> System:
    price, note = TPU_PRICE[chip.name]
    return System(name, chip, n, n, price, note, description, tpu_topology=topology)


SYSTEMS = {s.name: s for s in (
    # H100 median across 37 providers, May 2026 (mercatus-ai GPU pricing).
    _domain("h100x8", H100, 8, 2.95, "median of 37 providers, May 2026", "HGX H100: 8 x H100 SXM, NVLink4"),
    # H200 specialty clouds $3.50-4.50, May 2026 (aimultiple GPU index): midpoint.
    _domain("h200x8", H200, 8, 4.00, "specialty-cloud midpoint, May 2026", "HGX H200: 8 x H200 SXM, NVLink4"),
    # Single GPUs at the same prices, for models that fit one chip and for checks against a real card.
    _domain("h100x1", H100, 1, 2.95, "median of 37 providers, May 2026", "one H100 SXM"),
    _domain("h200x1", H200, 1, 4.00, "specialty-cloud midpoint, May 2026", "one H200 SXM"),
    # B200 cheapest on-demand ~$3.75 (Jun 2026); hyperscalers $8-14. A mid-market figure.
    _domain("b200x8", B200, 8, 5.50, "assumed: between $3.75 on-demand low and $8 hyperscaler, Jun 2026",
           "HGX B200: 8 x B200, NVLink5"),
    # GB200: no reliable public per-GPU price (hardware.md); assumed 1.2x a B200 for the NVL72 fabric and power.
    _domain("gb200-nvl72", GB200, 72, 6.60, "assumed: 1.2 x the b200x8 default; no public per-GPU price",
           "GB200 NVL72: 72 x B200 in one NVLink5 domain"),
    _domain("h800x8", H800, 8, 2.95, "assumed: the h100x8 default (the same GPU); no published price found",
           "HGX H800: 8 x H800 SXM, NVLink at 400 GB/s"),
    _domain("h20x8", H20, 8, 2.95, "assumed: the h100x8 default; no published price found", "HGX H20: 8 x H20"),
    _domain("b300x8", B300, 8, 6.60, "assumed: 1.2 x the b200x8 default; no published price found",
           "HGX B300: 8 x B300, NVLink5"),
    _domain("gb300-nvl72", GB300, 72, 7.92, "assumed: 1.2 x the b300x8 default; no public per-GPU price",
           "GB300 NVL72: 72 x B300 in one NVLink5 domain"),
    _domain("mi300x8", MI300X, 8, 1.85, "Vultr on demand, via cliffcenter.com research note, 2026-05-18",
           "8 x AMD Instinct MI300X, Infinity Fabric"),
    _domain("mi325x8", MI325X, 8, 1.95, "TensorWave, via cliffcenter.com research note, 2026-05-18",
           "8 x AMD Instinct MI325X, Infinity Fabric"),
    _domain("mi355x8", MI355X, 8, 5.50, "assumed: the b200x8 default; no published price found",
           "8 x AMD Instinct MI355X, Infinity Fabric"),
    _domain("v7x-8", V7X, 8, 12.00, "unconfirmed: a third-party file's GCP on-demand us-central1 figure",
           "TPU v7x (Ironwood), 8 chips on ICI, emulated on CPU (the pinned libtpu has no v7x)"),
    _tpu("v5e-8", V5E, 8, "v5e:2x4", "TPU v5e slice, 2x4 chips on ICI"),
    _tpu("v5e-256", V5E, 256, "v5e:16x16", "TPU v5e pod, 16x16 chips on a 2D ICI torus"),
    _tpu("v5p-8", V5P, 4, "v5p:2x2x1", "TPU v5p-8: 8 TensorCores = 4 chips (2x2x1) on ICI"),
    _tpu("v6e-8", V6E, 8, "v6e:2x4", "TPU v6e slice, 2x4 chips on ICI"),
    _tpu("v6e-256", V6E, 256, "v6e:16x16", "TPU v6e pod, 16x16 chips on a 2D ICI torus"),
)}


NODES = ("h100x8", "h200x8", "b200x8", "gb200-nvl72", "h800x8", "h20x8", "b300x8", "gb300-nvl72", "mi300x8",
         "mi325x8", "mi355x8")  # NVLink domains that join into clusters as NODE*N
FAMILIES = {"h100": "h100x8", "h200": "h200x8", "b200": "b200x8", "gb200": "gb200-nvl72", "h800": "h800x8",
            "h20": "h20x8", "b300": "b300x8", "gb300": "gb300-nvl72"}  # CHIPxN: N of its domain


def _part_of_domain(name: str) -> System | None:
    """`CHIPxN`: N chips of one NVLink domain (h100x2, b200x4, gb200x4), as published benchmarks run them, at the
    full system's per-chip price; None where the name is not of that shape."""
    chip, x, count = name.rpartition("x")
    if not x or chip not in FAMILIES or not (count.isascii() and count.isdigit()):
        return None
    whole = SYSTEMS[FAMILIES[chip]]
    n = int(count)
    if not 1 <= n <= whole.domain_size:
        raise ConfigError(f"system {name!r}: {chip} systems hold 1 to {whole.domain_size} chips in one NVLink domain; "
                          f"for more, join nodes: {NODES[list(FAMILIES).index(chip)]}*N")
    return System(name, whole.chip, n, n, whole.usd_per_chip_hour, whole.price_note,
                  f"{n} x {whole.chip.name} in one NVLink domain (of a {whole.description.split(':')[0]})")


def get_system(name: str, usd_per_chip_hour: float | None = None) -> System:
    """A system by name; `NODE*N` is N of a multi-GPU NVLink system joined by their scale-out network (h200x8*9)."""
    if not isinstance(name, str):
        raise ConfigError(f"system must be a name, got {name!r} (see `tracer systems`)")
    base, star, count = name.partition("*")
    sized = _part_of_domain(base) if base not in SYSTEMS and not star else None
    if base not in SYSTEMS and sized is None:
        raise ConfigError(f"unknown system {name!r}; choose one of: {', '.join(SYSTEMS)}, CHIPxN for N chips of "
                          f"one NVLink domain ({', '.join(FAMILIES)}; e.g. b200x4), or NODE*N for N nodes of an "
                          "8-GPU system (e.g. h200x8*9) (see `tracer systems`)")
    system = sized or SYSTEMS[base]
    if star:
        if not (count.isascii() and count.isdigit()) or int(count) < 1:
            raise ConfigError(f"system {name!r}: the node count after '*' must be a positive integer, e.g. {base}*2")
        if base not in NODES:
            raise ConfigError(f"system {name!r}: only multi-GPU nodes ({', '.join(NODES)}) join into clusters")
        nodes = int(count)
        system = dataclasses.replace(system, name=name, n_chips=system.n_chips * nodes,
                                     description=f"{nodes} x {system.description}, joined by InfiniBand "
                                                 f"({system.chip.scale_out_bw / 1e9:.0f} GB/s per GPU)")
    if usd_per_chip_hour is not None:
        if not is_number(usd_per_chip_hour) or usd_per_chip_hour <= 0:
            raise ConfigError(f"--price must be a finite number > 0 of USD per chip-hour, got {usd_per_chip_hour!r}")
        system = dataclasses.replace(system, usd_per_chip_hour=usd_per_chip_hour, price_note="set by the user")
    return system


def whole_domain(chip: Chip) -> int:
    """Chips in the largest scale-up domain built of this chip here (8 in an HGX node, 72 in an NVL72): what a
    system of fewer of them (h200x1, gb200x4) shares its NVLink with."""
    return max(s.domain_size for s in SYSTEMS.values() if s.chip.name == chip.name)


def part_of(system: System, n: int) -> System:
    """n chips of one of the system's scale-up domains (a pipeline stage), at the system's price per chip."""
    for family, whole in FAMILIES.items():
        if SYSTEMS[whole].chip.name == system.chip.name and n <= SYSTEMS[whole].domain_size:
            part = SYSTEMS[whole] if n == SYSTEMS[whole].domain_size else _part_of_domain(f"{family}x{n}")
            return dataclasses.replace(part, usd_per_chip_hour=system.usd_per_chip_hour, price_note=system.price_note)
    raise ConfigError(f"{system.name}: {n} chips are not a part of one scale-up domain of a GPU system here "
                      f"({', '.join(FAMILIES)}); a pipeline stage must sit in one")
