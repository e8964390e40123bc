"""Device conditions: parsers for what Linux boards and Android phones report, and one collector.

The parsers take the text of /proc/cpuinfo, /proc/device-tree/model, ``vcgencmd``, ``lscpu``,
``getprop``, ``dumpsys thermalservice`` and ``adb devices -l`` as real tools print it (see
../shared/fixtures/device-outputs/SOURCES.md for the quirks). ``collect_conditions`` gathers a
snapshot through a transport in one shell round trip; ``select_cores`` turns ``--cores`` into CPU
ids; ``thermal_verdict`` / ``is_hot`` decide whether a device is fit to measure.
"""
from __future__ import annotations

import re

from ..errors import TopformerDeployError

# (implementer, part) -> core name, after Linux arch/arm64/include/asm/cputype.h
CPU_PARTS = {
    (0x41, 0xC05): "Cortex-A5", (0x41, 0xC07): "Cortex-A7", (0x41, 0xC08): "Cortex-A8",
    (0x41, 0xC09): "Cortex-A9", (0x41, 0xC0D): "Cortex-A12", (0x41, 0xC0E): "Cortex-A17",
    (0x41, 0xC0F): "Cortex-A15", (0x41, 0xD01): "Cortex-A32", (0x41, 0xD02): "Cortex-A34",
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD06): "Cortex-A65", (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD09): "Cortex-A73", (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76",
    (0x41, 0xD0C): "Neoverse-N1", (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD0E): "Cortex-A76AE",
    (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78", (0x41, 0xD42): "Cortex-A78AE",
    (0x41, 0xD43): "Cortex-A65AE", (0x41, 0xD44): "Cortex-X1", (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710", (0x41, 0xD48): "Cortex-X2", (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4A): "Neoverse-E1", (0x41, 0xD4B): "Cortex-A78C", (0x41, 0xD4C): "Cortex-X1C",
    (0x41, 0xD4D): "Cortex-A715", (0x41, 0xD4E): "Cortex-X3", (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD80): "Cortex-A520", (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4",
    (0x41, 0xD84): "Neoverse-V3", (0x41, 0xD85): "Cortex-X925", (0x41, 0xD87): "Cortex-A725",
    (0x41, 0xD8E): "Neoverse-N3",
    (0x51, 0x800): "Kryo 2xx Gold (Cortex-A73)", (0x51, 0x801): "Kryo 2xx Silver (Cortex-A53)",
    (0x51, 0x802): "Kryo 3xx Gold (Cortex-A75)", (0x51, 0x803): "Kryo 3xx Silver (Cortex-A55)",
    (0x51, 0x804): "Kryo 4xx Gold (Cortex-A76)", (0x51, 0x805): "Kryo 4xx Silver (Cortex-A55)",
    (0x51, 0xC00): "Falkor", (0x51, 0x211): "Kryo",
}

# bit -> name of the `vcgencmd get_throttled` flags (bits 0-3 "now", 16-19 "has occurred")
THROTTLE_BITS = {0: "under-voltage", 1: "arm-freq-capped", 2: "throttled", 3: "soft-temp-limit"}

# android.os.Temperature TYPE_* ; 6-8 are battery current/voltage/percentage, not temperatures
ANDROID_THERMAL_TYPES = {
    -1: "unknown", 0: "cpu", 1: "gpu", 2: "battery", 3: "skin", 4: "usb_port", 5: "power_amplifier",
    6: "bcl_voltage", 7: "bcl_current", 8: "bcl_percentage", 9: "npu", 10: "tpu", 11: "display",
    12: "modem", 13: "soc", 14: "wifi", 15: "camera", 16: "flashlight", 17: "speaker", 18: "ambient",
    19: "pogo",
}
NOT_TEMPERATURES = {6, 7, 8}

# processor field (bits 12-15) of a new-style Raspberry Pi revision code
PI_PROCESSORS = {0: "BCM2835", 1: "BCM2836", 2: "BCM2837", 3: "BCM2711", 4: "BCM2712"}

#: ``uname -m`` -> the Android ABI name of that instruction set (what ``ro.product.cpu.abi`` says on a phone)
UNAME_ABIS = {"aarch64": "arm64-v8a", "arm64": "arm64-v8a", "armv8l": "armeabi-v7a", "armv7l": "armeabi-v7a",
              "armv7": "armeabi-v7a", "x86_64": "x86_64", "amd64": "x86_64", "i686": "x86", "i386": "x86",
              "riscv64": "riscv64"}

ADB_STATES = ("device", "offline", "unauthorized", "bootloader", "recovery", "sideload", "host",
              "authorizing", "connecting", "rescue", "unknown", "no permissions")
ADB_FIELDS = ("usb", "product", "model", "device", "transport_id", "features")


def _number(text: str) -> float | None:
    """A float from ``text``; accepts a locale decimal comma (``1900,0000``) and a trailing unit."""
    m = re.match(r"\s*(-?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?)", text or "")
    return float(m.group(1).replace(",", ".")) if m else None


# ---------------------------------------------------------------------------------------- cpuinfo
def cpu_part_name(implementer: int | None, part: int | None) -> str | None:
    """Core name for a MIDR implementer/part pair (implementer 0x41 = Arm assumed when missing)."""
    if part is None:
        return None
    return CPU_PARTS.get((0x41 if implementer is None else implementer, part))


def parse_cpuinfo(text: str) -> dict:
    """/proc/cpuinfo (Arm or x86; TAB or space separated) -> per-CPU entries and board fields."""
    cpus, board, current = [], {}, None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor" and value.isdigit():
            current = {"cpu": int(value)}
            cpus.append(current)
        elif key in ("CPU implementer", "CPU part", "CPU variant") and current is not None:
            try:
                current[key.split()[1]] = int(value, 16)
            except ValueError:
                pass
        elif key == "model name" and current is not None:
            current["model_name"] = value
        elif key in ("Hardware", "Revision", "Serial", "Model", "Processor", "vendor_id"):
            board[key.lower()] = value
    for cpu in cpus:
        name = cpu_part_name(cpu.get("implementer"), cpu.get("part"))
        cpu["name"] = name or cpu.get("model_name")
        if cpu.get("part") is not None:
            cpu["part"] = "0x%03x" % cpu["part"]
        if cpu.get("implementer") is not None:
            cpu["implementer"] = "0x%02x" % cpu["implementer"]
        cpu.pop("variant", None)
    return {"cpus": cpus, "hardware": board.get("hardware"), "revision": board.get("revision"),
            "serial": board.get("serial"), "model": board.get("model"),
            "processor": board.get("processor"), "vendor_id": board.get("vendor_id")}


def parse_device_tree_model(text: str | bytes) -> str | None:
    """/proc/device-tree/model: NUL-terminated, no newline; a pasted prompt after it is cut off."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    model = text.split("\x00")[0].strip()
    m = re.match(r"(Raspberry Pi .*? Rev \d+\.\d+)", model)
    return (m.group(1) if m else model) or None


def parse_lscpu(text: str) -> dict:
    """``lscpu`` -> {key: value} plus architecture, model_name, cpus, max_mhz/min_mhz (decimal commas ok)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            fields[key.strip()] = value.strip()
    cpus = fields.get("CPU(s)")
    return {"fields": fields, "architecture": fields.get("Architecture"), "model_name": fields.get("Model name"),
            "cpus": int(cpus) if cpus and cpus.isdigit() else None,
            "max_mhz": _number(fields.get("CPU max MHz", "")), "min_mhz": _number(fields.get("CPU min MHz", "")),
            "bogomips": _number(fields.get("BogoMIPS", ""))}


# --------------------------------------------------------------------------------- Raspberry Pi
def decode_throttled(value: int | str) -> list[str]:
    """Named flags of ``vcgencmd get_throttled`` (``0x50005`` -> under-voltage-now, throttled-now, ...)."""
    bits = int(value, 16) if isinstance(value, str) else int(value)
    flags = [f"{name}-now" for bit, name in THROTTLE_BITS.items() if bits >> bit & 1]
    flags += [f"{name}-occurred" for bit, name in THROTTLE_BITS.items() if bits >> (bit + 16) & 1]
    return flags


def parse_vcgencmd(text: str) -> dict:
    """``measure_temp`` / ``measure_clock arm`` / ``get_throttled`` lines, possibly repeated (the last wins)."""
    temps = [float(t) for t in re.findall(r"temp=(-?\d+(?:\.\d+)?)'C", text)]
    clocks = [int(c) for c in re.findall(r"frequency\(\d+\)=(\d+)", text)]
    throttled = re.findall(r"throttled=(0x[0-9a-fA-F]+)", text)
    result = {"temps_c": temps, "temp_c": temps[-1] if temps else None,
              "arm_hz": clocks[-1] if clocks else None, "throttled": throttled[-1] if throttled else None}
    result["throttled_flags"] = decode_throttled(result["throttled"]) if throttled else []
    return result


# -------------------------------------------------------------------------------------- Android
def parse_getprop(text: str) -> dict[str, str]:
    """``getprop`` dump (``[key]: [value]``, any indentation, prompts ignored) -> {key: value}."""
    props = {}
    for m in re.finditer(r"^\s*\[([^\]]+)\]:\s*\[(.*)\]\s*$", text, re.MULTILINE):
        props[m.group(1)] = m.group(2)
    return props


def parse_getprop_value(text: str) -> str | None:
    """``getprop KEY`` -> the value (inner spaces kept), None when empty."""
    value = text.strip("\r\n").strip()
    return value or None


def soc_from_props(props: dict[str, str]) -> str | None:
    """The SoC an Android device reports: ro.soc.model, else the board platform / hardware."""
    for key in ("ro.soc.model", "ro.board.platform", "ro.hardware.chipname", "ro.product.board", "ro.hardware"):
        if props.get(key):
            return props[key]
    return None


def parse_thermalservice(text: str) -> dict:
    """``dumpsys thermalservice`` -> status, cached / current temperature lists, cooling devices."""
    result = {"status": None, "cached": [], "current": [], "cooling_devices": []}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Thermal Status:"):
            result["status"] = int(_number(line.split(":", 1)[1]) or 0)
        elif line.startswith("Cached temperatures"):
            section = "cached"
        elif line.startswith("Current temperatures"):
            section = "current"
        elif line.startswith("Current cooling devices"):
            section = "cooling_devices"
        elif line.endswith(":") and not line.startswith(("Temperature{", "CoolingDevice{")):
            section = None
        m = re.match(r"Temperature\{mValue=([^,]+), mType=(-?\d+), mName=([^,]*), mStatus=(-?\d+)\}", line)
        if m and section in ("cached", "current"):
            kind = int(m.group(2))
            result[section].append({
                "name": m.group(3), "value": float(m.group(1)), "type": kind,
                "type_name": ANDROID_THERMAL_TYPES.get(kind, str(kind)), "status": int(m.group(4)),
                "is_temperature": kind not in NOT_TEMPERATURES})
        m = re.match(r"CoolingDevice\{mValue=([^,]+), mType=(-?\d+), mName=([^}]*)\}", line)
        if m and section == "cooling_devices":
            result["cooling_devices"].append({"name": m.group(3), "value": float(m.group(1)), "type": int(m.group(2))})
    return result


def android_cpu_temperature(thermal: dict) -> float | None:
    """Hottest CPU sensor (type 0) of a parsed thermalservice dump: current values, else cached."""
    for section in ("current", "cached"):
        values = [t["value"] for t in thermal[section] if t["type"] == 0]
        if values:
            return max(values)
    return None


def parse_adb_devices(text: str) -> list[dict]:
    """``adb devices [-l]`` -> [{serial, state, detail, product, model, device, transport_id, usb, tcpip}].

    Noise lines (header, daemon messages, version mismatch, shell prompts) are skipped; states with
    spaces (``no permissions (...); see [url]``) are kept whole in ``detail``.
    """
    devices = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or line.startswith(("List of devices", "* ", "adb ")):
            continue
        serial, rest = parts[0], parts[1:]
        fields = {}
        while rest and rest[-1].split(":", 1)[0] in ADB_FIELDS and ":" in rest[-1]:
            key, value = rest.pop().split(":", 1)
            fields[key] = value
        detail = " ".join(rest)
        state = next((s for s in ADB_STATES if detail == s or detail.startswith(s + " ")), None)
        if state is None:
            continue
        transport_id = fields.get("transport_id")
        devices.append({
            "serial": serial, "state": state, "detail": detail, "product": fields.get("product"),
            "model": fields.get("model"), "device": fields.get("device"),
            "transport_id": int(transport_id) if transport_id and transport_id.isdigit() else None,
            "usb": fields.get("usb"), "tcpip": bool(re.fullmatch(r"[\w.\-\[\]:]+:\d+", serial))})
    return devices


# ------------------------------------------------------------------------------------- collector
# One shell snippet, sections marked "@@name"; every probe tolerates a missing file or command.
_PROBE = r"""
echo @@arch; uname -m 2>/dev/null
echo @@os; uname -sr 2>/dev/null; (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
echo @@hostname; hostname 2>/dev/null || cat /proc/sys/kernel/hostname 2>/dev/null
echo @@dt_model; cat /proc/device-tree/model 2>/dev/null | tr -d '\000'; echo
echo @@cpuinfo; cat /proc/cpuinfo 2>/dev/null
echo @@cpufreq
for d in /sys/devices/system/cpu/cpu[0-9]*; do
  [ -d "$d" ] || continue
  f=$d/cpufreq
  max=$(cat $f/cpuinfo_max_freq 2>/dev/null || echo -); cur=$(cat $f/scaling_cur_freq 2>/dev/null || echo -)
  gov=$(cat $f/scaling_governor 2>/dev/null || echo -); online=$(cat $d/online 2>/dev/null || echo -)
  echo "${d##*/cpu} $max $cur $gov $online"
done
echo @@thermal
for z in /sys/class/thermal/thermal_zone*; do
  [ -d "$z" ] || continue
  echo "$(cat $z/temp 2>/dev/null || echo -) $(cat $z/type 2>/dev/null || echo -)"
done
echo @@vcgencmd
if command -v vcgencmd >/dev/null 2>&1; then
  vcgencmd measure_temp; vcgencmd measure_clock arm; vcgencmd get_throttled
fi 2>/dev/null
echo @@getprop
if command -v getprop >/dev/null 2>&1; then
  getprop 2>/dev/null | grep -E '^\[ro\.(product\.(model|manufacturer|board|cpu\.abi)|soc\.(model|manufacturer)|board\.platform'\
'|hardware|build\.version\.(release|sdk)|serialno)\]'
fi
echo @@thermalservice
if command -v getprop >/dev/null 2>&1 && command -v dumpsys >/dev/null 2>&1; then dumpsys thermalservice 2>/dev/null; fi
echo @@loadavg; cat /proc/loadavg 2>/dev/null
echo @@taskset; command -v taskset 2>/dev/null
echo @@end
"""


def _sections(text: str) -> dict[str, str]:
    sections, name, lines = {}, None, []
    for line in text.splitlines():
        if line.startswith("@@"):
            if name:
                sections[name] = "\n".join(lines)
            name, lines = line[2:].strip(), []
        elif name:
            lines.append(line)
    if name:
        sections[name] = "\n".join(lines)
    return sections


def _cpufreq(text: str) -> dict[int, dict]:
    table = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 5 or not parts[0].isdigit():
            continue
        max_khz, cur_khz = (int(p) if p.isdigit() else None for p in parts[1:3])
        table[int(parts[0])] = {"max_khz": max_khz, "cur_khz": cur_khz,
                                "governor": None if parts[3] == "-" else parts[3],
                                "online": None if parts[4] == "-" else parts[4] == "1"}
    return table


def _thermal_zones(text: str) -> dict[str, float]:
    zones = {}
    for line in text.splitlines():
        value, _, name = line.partition(" ")
        number = _number(value) if value != "-" else None
        if number is None:
            continue
        celsius = number / 1000.0 if abs(number) >= 1000 else number  # millidegrees on almost every kernel
        key, n = name.strip() or "zone", 1
        while key in zones:
            n += 1
            key = f"{name.strip()}#{n}"
        zones[key] = round(celsius, 3)
    return zones


def _hottest(zones: dict[str, float]) -> float | None:
    plausible = {k: v for k, v in zones.items() if -40.0 < v < 150.0}
    cpu_like = [v for k, v in plausible.items()
                if re.search(r"cpu|soc|cluster|big|mid|little|tsens|pkg|core|acpitz", k, re.IGNORECASE)]
    values = cpu_like or list(plausible.values())
    return max(values) if values else None


def collect_conditions(transport, cores=None, timeout: float = 20.0) -> dict:
    """A snapshot of the device: model, SoC, arch, os, per-CPU part/frequency/governor, temperatures,
    Raspberry Pi throttling, load average. Missing files and commands just leave fields empty; what
    the device reports is taken as is (under qemu-user /proc/cpuinfo is the host's and says so).
    ``cores`` (a --cores spec) adds ``cores``: the CPU ids :func:`select_cores` picks.
    """
    s = _sections(transport.probe(_PROBE, timeout=timeout))
    cpuinfo = parse_cpuinfo(s.get("cpuinfo", ""))
    freq = _cpufreq(s.get("cpufreq", ""))
    props = parse_getprop(s.get("getprop", ""))
    vcgencmd = parse_vcgencmd(s.get("vcgencmd", "")) if s.get("vcgencmd", "").strip() else None
    thermal_service = parse_thermalservice(s["thermalservice"]) if s.get("thermalservice", "").strip() else None
    zones = _thermal_zones(s.get("thermal", ""))
    arch = (s.get("arch") or "").strip() or None
    os_lines = [x.strip() for x in (s.get("os") or "").splitlines() if x.strip()]

    by_id = {c["cpu"]: c for c in cpuinfo["cpus"]}
    cpus = []
    for cpu_id in sorted(set(by_id) | set(freq)):
        info, f = by_id.get(cpu_id, {}), freq.get(cpu_id, {})
        cpus.append({"cpu": cpu_id, "part": info.get("part"), "implementer": info.get("implementer"),
                     "name": info.get("name"), "max_khz": f.get("max_khz"), "cur_khz": f.get("cur_khz"),
                     "governor": f.get("governor"), "online": f.get("online")})

    temp_c = vcgencmd["temp_c"] if vcgencmd and vcgencmd["temp_c"] is not None else _hottest(zones)
    if temp_c is None and thermal_service:
        temp_c = android_cpu_temperature(thermal_service)
    notes = []
    if arch in ("aarch64", "arm64", "armv7l", "armv8l") and cpuinfo["vendor_id"]:
        notes.append(f"/proc/cpuinfo describes {cpuinfo['vendor_id']} CPUs on an {arch} userland "
                     "(emulated, e.g. qemu-user): CPU names are the host's")
    if not any(c["max_khz"] for c in cpus):
        notes.append("no cpufreq information: big/little cores cannot be told apart")
    loadavg = [float(x) for x in (s.get("loadavg") or "").split()[:3] if _number(x) is not None] or None

    conditions = {
        "model": (props.get("ro.product.model") or parse_device_tree_model(s.get("dt_model", ""))
                  or cpuinfo["model"]),
        "manufacturer": props.get("ro.product.manufacturer"),
        "soc": soc_from_props(props) or soc_from_cpuinfo(cpuinfo),
        "hardware": cpuinfo["hardware"],
        "arch": arch, "os": " / ".join(os_lines) or None,
        "android": {"release": props.get("ro.build.version.release"), "sdk": props.get("ro.build.version.sdk")}
        if props else None,
        "abi": props.get("ro.product.cpu.abi") or UNAME_ABIS.get(arch or ""),
        "hostname": (s.get("hostname") or "").strip() or None,
        "serial": props.get("ro.serialno") or cpuinfo["serial"],
        "cpus": cpus,
        "thermal_zones": zones, "temp_c": temp_c,
        "android_thermal_status": thermal_service["status"] if thermal_service else None,
        "throttled": vcgencmd["throttled"] if vcgencmd else None,
        "throttled_flags": vcgencmd["throttled_flags"] if vcgencmd else [],
        "arm_hz": vcgencmd["arm_hz"] if vcgencmd else None,
        "loadavg": loadavg,
        "taskset": (s.get("taskset") or "").strip() or None,
        "probe_ok": "end" in s,
        "notes": notes,
    }
    if cores is not None:
        conditions["cores"] = select_cores(conditions, cores)
    return conditions


def core_clusters(cpus: list[dict]) -> list[dict]:
    """The CPUs grouped by cpufreq maximum (by core name when there is none), slowest first:
    ``[{"cpus": [0, 1, 2, 3], "name": "Cortex-A55", "max_khz": 1803000}, ...]``."""
    groups: dict[tuple, list[dict]] = {}
    for cpu in cpus:
        key = (cpu.get("max_khz") or 0, "" if cpu.get("max_khz") else cpu.get("name") or "")
        groups.setdefault(key, []).append(cpu)
    clusters = []
    for (max_khz, _), members in sorted(groups.items()):
        names = [c.get("name") for c in members if c.get("name")]
        clusters.append({"cpus": [c["cpu"] for c in members],
                         "name": max(set(names), key=names.count) if names else None, "max_khz": max_khz or None})
    return clusters


def soc_from_cpuinfo(cpuinfo: dict) -> str | None:
    """The SoC from parsed /proc/cpuinfo: a Raspberry Pi revision code names it exactly (the Pi 4's
    kernel says ``Hardware: BCM2835``); else the last word of Hardware ('... Inc SM8250' -> 'SM8250')."""
    revision = cpuinfo.get("revision") or ""
    if re.fullmatch(r"[0-9a-fA-F]{6,8}", revision) and int(revision, 16) >> 23 & 1:  # new-style code
        soc = PI_PROCESSORS.get(int(revision, 16) >> 12 & 0xF)
        if soc:
            return soc
    hardware = cpuinfo.get("hardware")
    return hardware.split()[-1] if hardware else None


# ------------------------------------------------------------------------------- cores and heat
def parse_cpu_list(spec: str) -> list[int]:
    """'4-7', '0,2,4-5' -> sorted CPU ids; anything else is a TopformerDeployError."""
    ids = set()
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise TopformerDeployError(f"--cores {spec!r}: use big, little, all or a CPU list such as 4-7 or 0,2")
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        if high < low:
            raise TopformerDeployError(f"--cores {spec!r}: range {low}-{high} is backwards")
        ids.update(range(low, high + 1))
    return sorted(ids)


def select_cores(conditions: dict, spec: str | None) -> list[int] | None:
    """CPU ids for ``--cores big|little|all|LIST``; None means "do not pin".

    big / little are the CPUs with the highest / lowest cpufreq maximum. Without cpufreq
    information they cannot be told apart: a note is added to ``conditions['notes']`` and None
    is returned. A LIST naming CPUs the device does not have is an error.
    """
    if spec is None:
        return None
    cpus = [c for c in conditions.get("cpus", []) if c.get("online") is not False]
    known = sorted(c["cpu"] for c in cpus)
    key = str(spec).strip().lower()
    if key == "all":
        return known or None
    if key in ("big", "little"):
        maxima = {c["cpu"]: c["max_khz"] for c in cpus if c.get("max_khz")}
        if not maxima:
            conditions.setdefault("notes", []).append(
                f"--cores {key}: the device reports no cpufreq maxima, so the run is not pinned")
            return None
        target = max(maxima.values()) if key == "big" else min(maxima.values())
        return sorted(cpu for cpu, khz in maxima.items() if khz == target)
    ids = parse_cpu_list(key)
    missing = [i for i in ids if known and i not in known]
    if missing:
        raise TopformerDeployError(f"--cores {spec}: the device has no online CPU {missing[0]} "
                                   f"(online: {','.join(map(str, known))})")
    return ids


def thermal_verdict(conditions: dict, max_temp: float | None) -> dict:
    """{"hot": bool, "reasons": [...]}: above ``max_temp`` or throttled / capped right now."""
    reasons = []
    temp = conditions.get("temp_c")
    if max_temp is not None and temp is not None and temp > max_temp:
        reasons.append(f"temperature {temp:.1f} C is above --max-temp {max_temp:g} C")
    now = [f for f in conditions.get("throttled_flags") or [] if f.endswith("-now")]
    if now:
        reasons.append("Raspberry Pi firmware reports " + ", ".join(now) + f" ({conditions.get('throttled')})")
    status = conditions.get("android_thermal_status")
    if status:
        reasons.append(f"Android thermal status is {status} (0 = none)")
    return {"hot": bool(reasons), "reasons": reasons}


def is_hot(conditions: dict, max_temp: float | None) -> bool:
    """True when the device is too hot or throttled to give a fair measurement (see thermal_verdict)."""
    return thermal_verdict(conditions, max_temp)["hot"]
