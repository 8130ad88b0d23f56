"""What the real compilers need to know of a chip to compile for it without having one.

GPU: the XLA GPU compiler takes a target description (a GpuTargetConfigProto in text form) in place of a device it
would otherwise query; it uses the SM count, clocks, memory size and bandwidth, L2 size and compute capability to
choose fusions, tilings and kernels. The figures below are the ones XLA's own target specs carry for these parts
(openxla/xla, xla/backends/gpu/target_config/specs/: h100_sxm, h200, b200, gb200; ../shared/reference/hardware.md).
Only the fields this jaxlib's proto knows are written.

TPU: libtpu compiles for a named slice topology (`v5e:2x4`); the chips' figures live in meshes.systems.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuTarget:
    description: str  # the device name the compiler reports
    compute_capability: tuple[int, int]
    sm_count: int
    clock_ghz: float
    memory_bytes: int
    memory_bw: float  # bytes/s
    l2_bytes: int
    dnn_version: tuple[int, int] = (9, 8)

    def proto_text(self) -> str:
        major, minor = self.compute_capability
        info = {
            "threads_per_block_limit": 1024, "threads_per_warp": 32, "shared_memory_per_block": 49152,
            "shared_memory_per_core": 233472, "threads_per_core_limit": 2048, "core_count": self.sm_count,
            "fpus_per_core": 128, "block_dim_limit_x": 2147483647, "block_dim_limit_y": 65535,
            "block_dim_limit_z": 65535, "memory_bandwidth": int(self.memory_bw), "l2_cache_size": self.l2_bytes,
            "clock_rate_ghz": self.clock_ghz, "device_memory_size": self.memory_bytes,
            "shared_memory_per_block_optin": 232448, "registers_per_core_limit": 65536,
            "registers_per_block_limit": 65536,
        }
        lines = ["gpu_device_info {", *(f"  {k}: {v}" for k, v in info.items()),
                 f"  cuda_compute_capability {{ major: {major} minor: {minor} }}", "}",
                 'platform_name: "CUDA"',
                 f"dnn_version_info {{ major: {self.dnn_version[0]} minor: {self.dnn_version[1]} }}",
                 f'device_description_str: "{self.description}"']
        return "\n".join(lines) + "\n"


GPU_TARGETS = {
    "H100 SXM": GpuTarget("NVIDIA H100 80GB HBM3", (9, 0), 132, 1.98, 84_942_979_072, 3.35232e12, 52_428_800),
    "H200 SXM": GpuTarget("NVIDIA H200 141GB HBM3e", (9, 0), 132, 1.98, 151_397_597_184, 4.8e12, 52_428_800),
    "B200": GpuTarget("NVIDIA B200", (10, 0), 148, 1.965, 191_514_411_008, 7.67232e12, 132_644_864),
    "B200 (GB200)": GpuTarget("NVIDIA GB200", (10, 0), 152, 2.062, 197_897_748_480, 7.928064e12, 135_528_448),
    # Parts XLA carries no spec for here: the nearest shape it does, with the part's own memory size and bandwidth
    # (the H800 is the H100's GPU; the H20's and B300's SM counts are not published in a stored source).
    "H800 SXM": GpuTarget("NVIDIA H800", (9, 0), 132, 1.98, 84_942_979_072, 3.35232e12, 52_428_800),
    "H20": GpuTarget("NVIDIA H20", (9, 0), 132, 1.98, 102_005_473_280, 4.0e12, 52_428_800),
    "B300": GpuTarget("NVIDIA B300", (10, 0), 148, 1.965, 288_000_000_000, 8.0e12, 132_644_864),
    "B300 (GB300)": GpuTarget("NVIDIA GB300", (10, 0), 152, 2.062, 279_000_000_000, 8.0e12, 135_528_448),
}
