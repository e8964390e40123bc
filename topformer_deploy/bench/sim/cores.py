"""The simulated cores: what qemu-aarch64 7.2's CPU models expose, and the /proc/cpuinfo and sysfs text a
Linux board with such cores shows (so the runtime's CPU detection picks the kernels that core gets).

``features`` is exactly what the QEMU CPU model reports through AT_HWCAP/AT_HWCAP2 under qemu-user
7.2 (measured with getauxval in the guest; the kernel's /proc/cpuinfo names, in the kernel's order).
A real kernel would also print ``evtstrm`` (a timer feature qemu-user does not set) and, for boards
without the crypto extension (the Raspberry Pi 4's BCM2711), no aes/pmull/sha1/sha2: the Features
line here follows QEMU so that /proc/cpuinfo and getauxval() agree inside the simulation.
``midr`` is what `mrs x0, midr_el1` returns under that model (also measured). Core counts and clocks
are those of a typical board with that core (``board``); cpufreq values are in kHz. qemu 7.2 has no
cortex-a55 model.
"""
from __future__ import annotations

#: qemu CPU model -> description. ``max`` is not a real core (QEMU's everything-it-implements model).
CORES = {
    "cortex-a35": {
        "midr": 0x411FD040, "cores": 4, "max_khz": 1300000, "min_khz": 400000, "bogomips": "16.00",
        "board": "4x Cortex-A35 r1p0 (i.MX 8QuadXPlus class)",
        "features": "fp asimd aes pmull sha1 sha2 crc32 cpuid",
    },
    "cortex-a53": {
        "midr": 0x410FD034, "cores": 4, "max_khz": 1200000, "min_khz": 600000, "bogomips": "38.40",
        "board": "Raspberry Pi 3 Model B (BCM2837, 4x Cortex-A53 r0p4, 1.2 GHz)",
        "features": "fp asimd aes pmull sha1 sha2 crc32 cpuid",
    },
    "cortex-a57": {
        "midr": 0x411FD070, "cores": 4, "max_khz": 1428000, "min_khz": 102000, "bogomips": "38.40",
        "board": "Jetson Nano class (4x Cortex-A57 r1p0, 1.43 GHz)",
        "features": "fp asimd aes pmull sha1 sha2 crc32 cpuid",
    },
    "cortex-a72": {
        "midr": 0x410FD083, "cores": 4, "max_khz": 1800000, "min_khz": 600000, "bogomips": "108.00",
        "board": "Raspberry Pi 4 Model B (BCM2711, 4x Cortex-A72 r0p3, 1.8 GHz)",
        "features": "fp asimd aes pmull sha1 sha2 crc32 cpuid",
    },
    "cortex-a76": {
        "midr": 0x414FD0B1, "cores": 4, "max_khz": 2400000, "min_khz": 1500000, "bogomips": "108.00",
        "board": "Raspberry Pi 5 (BCM2712, 4x Cortex-A76 r4p1, 2.4 GHz)",
        "features": "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
    },
    "neoverse-n1": {
        "midr": 0x414FD0C1, "cores": 4, "max_khz": 2500000, "min_khz": 2500000, "bogomips": "243.75",
        "board": "4 vCPUs of an AWS Graviton2 (Neoverse-N1 r4p1 per QEMU, 2.5 GHz)",
        "features": "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
    },
    "a64fx": {
        "midr": 0x461F0010, "cores": 4, "max_khz": 2200000, "min_khz": 2200000, "bogomips": "200.00",
        "board": "4 of the 48 cores of a Fujitsu A64FX (SVE 512-bit)",
        "features": "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm fcma dcpop sve",
    },
    "max": {  # not a real core: QEMU's everything-it-implements model, useful to see I8MM/SVE paths
        "midr": 0x000F0510, "cores": 4, "max_khz": 2000000, "min_khz": 2000000, "bogomips": "50.00",
        "board": "QEMU 'max' (not a real core; implementer 0)",
        "features": "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
                    "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm ilrcpc flagm sb paca pacg dcpodp sve2 sveaes "
                    "svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm bf16 "
                    "rng bti mte sme",
    },
}


def midr_fields(midr: int) -> tuple[int, int, int, int]:
    """(implementer, variant, part, revision) of a MIDR_EL1 value."""
    return midr >> 24 & 0xFF, midr >> 20 & 0xF, midr >> 4 & 0xFFF, midr & 0xF


def features(core: str) -> set[str]:
    """The ISA features (HWCAP names) the guest sees on ``core``."""
    return set(CORES[core]["features"].split())


def proc_cpuinfo(core: str) -> str:
    """The text of an arm64 Linux /proc/cpuinfo for ``core`` (the kernel's c_show() layout)."""
    cpu = CORES[core]
    implementer, variant, part, revision = midr_fields(cpu["midr"])
    blocks = []
    for n in range(cpu["cores"]):
        blocks.append(
            "processor\t: %d\nBogoMIPS\t: %s\nFeatures\t: %s\nCPU implementer\t: 0x%02x\n"
            "CPU architecture: 8\nCPU variant\t: 0x%x\nCPU part\t: 0x%03x\nCPU revision\t: %d\n"
            % (n, cpu["bogomips"], cpu["features"], implementer, variant, part, revision))
    return "\n".join(blocks) + "\n"


def sysfs_files(core: str) -> dict[str, str]:
    """{relative path under sys/devices/system/cpu: text} for ``core`` (one cluster, no SMT)."""
    cpu = CORES[core]
    n = cpu["cores"]
    span = "0-%d\n" % (n - 1) if n > 1 else "0\n"
    files = {"possible": span, "present": span, "online": span, "offline": "\n", "kernel_max": "255\n"}
    for i in range(n):
        d = "cpu%d/" % i
        files.update({
            d + "online": "1\n",
            d + "cpufreq/cpuinfo_max_freq": "%d\n" % cpu["max_khz"],
            d + "cpufreq/cpuinfo_min_freq": "%d\n" % cpu["min_khz"],
            d + "cpufreq/scaling_max_freq": "%d\n" % cpu["max_khz"],
            d + "cpufreq/scaling_min_freq": "%d\n" % cpu["min_khz"],
            d + "cpufreq/scaling_cur_freq": "%d\n" % cpu["max_khz"],
            d + "cpufreq/cpuinfo_cur_freq": "%d\n" % cpu["max_khz"],
            d + "cpufreq/scaling_governor": "performance\n",
            d + "topology/physical_package_id": "0\n",
            d + "topology/cluster_id": "0\n",
            d + "topology/core_id": "%d\n" % i,
            d + "topology/core_siblings_list": span,
            d + "topology/package_cpus_list": span,
            d + "topology/cluster_cpus_list": span,
            d + "topology/thread_siblings_list": "%d\n" % i,
            d + "topology/core_cpus_list": "%d\n" % i,
            d + "regs/identification/midr_el1": "0x%016x\n" % cpu["midr"],
            d + "regs/identification/revidr_el1": "0x%016x\n" % 0,
        })
    return files
