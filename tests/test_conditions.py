"""Device-condition parsers on the real tool outputs in ../shared/fixtures/device-outputs, and the collector."""
from __future__ import annotations

import os
import platform

import pytest

from topformer_deploy.bench.conditions import (
    android_cpu_temperature, collect_conditions, decode_throttled, is_hot, parse_adb_devices, parse_cpuinfo,
    parse_cpu_list, parse_device_tree_model, parse_getprop, parse_getprop_value, parse_lscpu, parse_thermalservice,
    parse_vcgencmd, select_cores, soc_from_cpuinfo, soc_from_props, thermal_verdict)
from topformer_deploy.bench.transports import LocalTransport, RunResult, Transport
from topformer_deploy.errors import TopformerDeployError


@pytest.fixture()
def read(device_outputs):
    return lambda name: (device_outputs / name).read_text()


# ------------------------------------------------------------------------------------ cpuinfo
def test_snapdragon865_cpuinfo_names_kryo_silver_and_a77_cores(read):
    info = parse_cpuinfo(read("android_proc_cpuinfo_snapdragon865_sm8250.txt"))
    assert [c["cpu"] for c in info["cpus"]] == list(range(8))
    assert [c["part"] for c in info["cpus"]] == ["0x805"] * 4 + ["0xd0d"] * 4
    assert [c["implementer"] for c in info["cpus"]] == ["0x51"] * 4 + ["0x41"] * 4
    assert [c["name"] for c in info["cpus"]] == ["Kryo 4xx Silver (Cortex-A55)"] * 4 + ["Cortex-A77"] * 4
    assert info["hardware"] == "Qualcomm Technologies, Inc SM8250"
    assert info["processor"] == "AArch64 Processor rev 14 (aarch64)"  # the leading "Processor" line
    assert soc_from_cpuinfo(info) == "SM8250"


def test_snapdragon888_cpuinfo_with_four_spaces_before_the_colon(read):
    info = parse_cpuinfo(read("android_proc_cpuinfo_snapdragon888_sm8350_oneplus9pro.txt"))
    names = [c["name"] for c in info["cpus"]]
    assert names == ["Cortex-A55"] * 4 + ["Cortex-A78"] * 3 + ["Cortex-X1"]
    assert info["cpus"][7]["part"] == "0xd44"
    assert soc_from_cpuinfo(info) == "SM8350"


def test_tensor_g1_cpuinfo_without_hardware_line(read):
    info = parse_cpuinfo(read("android_proc_cpuinfo_google_tensor_g1_pixel6.txt"))
    assert [c["name"] for c in info["cpus"]] == ["Cortex-A55"] * 4 + ["Cortex-A76"] * 2 + ["Cortex-X1"] * 2
    assert info["hardware"] is None and soc_from_cpuinfo(info) is None


@pytest.mark.parametrize("name, model, revision, soc", [
    ("rpi4_proc_cpuinfo_aarch64_kernel6.1_bullseye.txt", "Raspberry Pi 4 Model B Rev 1.1", "c03111", "BCM2711"),
    ("rpi4_proc_cpuinfo_aarch64_no_hardware_line_rev1.5.txt", "Raspberry Pi 4 Model B Rev 1.5", "d03115", "BCM2711"),
    ("rpi4_proc_cpuinfo_aarch64_kernel4.19_no_board_fields.txt", None, None, None),
])
def test_raspberry_pi4_cpuinfo_variants(read, name, model, revision, soc):
    info = parse_cpuinfo(read(name))
    assert [c["name"] for c in info["cpus"]] == ["Cortex-A72"] * 4
    assert {c["part"] for c in info["cpus"]} == {"0xd08"}
    assert info["model"] == model and info["revision"] == revision
    assert soc_from_cpuinfo(info) == soc  # the revision code says BCM2711 where the kernel says BCM2835


def test_tab_separated_pi_cpuinfo_keeps_the_kernel_hardware_string(read):
    info = parse_cpuinfo(read("rpi4_proc_cpuinfo_aarch64_kernel6.1_bullseye.txt"))
    assert info["hardware"] == "BCM2835" and info["serial"] == "10000000266dd214"


def test_cpuinfo_tail_after_prompt_and_ellipsis(read):
    info = parse_cpuinfo(read("rpi4_vcgencmd_get_throttled_0x80008_version_cpuinfo_tail.txt"))
    assert info["cpus"] == []
    assert info["hardware"] == "BCM2711" and info["model"] == "Raspberry Pi 4 Model B Rev 1.5"


def test_device_tree_model_without_newline(read):
    pasted = read("rpi4_proc_device_tree_model_no_newline.txt")  # "...Rev 1.4root": the prompt ran on
    assert parse_device_tree_model(pasted) == "Raspberry Pi 4 Model B Rev 1.4"
    assert parse_device_tree_model(b"Raspberry Pi 4 Model B Rev 1.4\x00") == "Raspberry Pi 4 Model B Rev 1.4"
    assert parse_device_tree_model("") is None


def test_lscpu_with_locale_decimal_commas(read):
    info = parse_lscpu(read("rpi4_family_lscpu_bookworm_locale_decimal_comma.txt"))
    assert info["max_mhz"] == 1900.0 and info["min_mhz"] == 600.0 and info["bogomips"] == 108.0
    assert info["architecture"] == "aarch64" and info["model_name"] == "Cortex-A72" and info["cpus"] == 4
    assert info["fields"]["CPU op-mode(s)"] == "32-bit, 64-bit"  # a comma that is not a decimal comma


# --------------------------------------------------------------------------------- vcgencmd
def test_throttled_0x50005_is_under_voltage_and_throttled_now_and_before(read):
    parsed = parse_vcgencmd(read("rpi3_vcgencmd_temp_throttled_0x50005.txt"))
    assert parsed["throttled"] == "0x50005"
    assert parsed["throttled_flags"] == ["under-voltage-now", "throttled-now",
                                         "under-voltage-occurred", "throttled-occurred"]
    assert parsed["temps_c"] == [38.6, 38.6]


def test_throttled_0x50000_happened_before_only(read):
    parsed = parse_vcgencmd(read("rpi3_vcgencmd_temp_throttled_0x50000.txt"))
    assert parsed["throttled_flags"] == ["under-voltage-occurred", "throttled-occurred"]
    assert parsed["temps_c"] == [39.2, 38.6] and parsed["temp_c"] == 38.6


def test_throttled_0x80008_is_the_soft_temperature_limit(read):
    parsed = parse_vcgencmd(read("rpi4_vcgencmd_get_throttled_0x80008_version_cpuinfo_tail.txt"))
    assert parsed["throttled_flags"] == ["soft-temp-limit-now", "soft-temp-limit-occurred"]
    assert parsed["temp_c"] is None


def test_vcgencmd_monitor_loop_keeps_the_last_sample(read):
    parsed = parse_vcgencmd(read("rpi4_vcgencmd_temp_clock_throttled_monitor_loop.txt"))
    assert parsed["temps_c"] == [76.4, 64.7] and parsed["temp_c"] == 64.7
    assert parsed["arm_hz"] == 1800457088
    assert parsed["throttled"] == "0x0" and parsed["throttled_flags"] == []


def test_decode_throttled_every_bit():
    assert decode_throttled(0) == []
    assert decode_throttled("0xF000F") == [
        "under-voltage-now", "arm-freq-capped-now", "throttled-now", "soft-temp-limit-now",
        "under-voltage-occurred", "arm-freq-capped-occurred", "throttled-occurred", "soft-temp-limit-occurred"]


# ---------------------------------------------------------------------------------- Android
def test_getprop_dump_with_indentation_and_double_spaces(read):
    props = parse_getprop(read("adb_getprop_dump_nexus5_msm8974_flutter_indented.txt"))
    assert len(props) == 27
    assert props["ro.board.platform"] == "msm8974"
    assert props["ro.build.date"] == "Tue Jan  6 22:40:00 UTC 2015"
    assert soc_from_props(props) == "msm8974"


def test_getprop_grep_with_device_prompts(read):
    props = parse_getprop(read("adb_getprop_grep_bracketed_oneplus7pro_msmnile.txt"))
    assert len(props) == 9 and props["ro.product.board"] == "msmnile"
    assert props["ro.product.system.device"] == "OnePlus7Pro"
    assert soc_from_props(props) == "msmnile"
    assert soc_from_props({"ro.soc.model": "SM8250", "ro.board.platform": "kona"}) == "SM8250"


def test_getprop_single_value_keeps_inner_space(read):
    assert parse_getprop_value(read("adb_getprop_ro.product.model_nexus5.txt")) == "Nexus 5"
    assert parse_getprop_value("\n") is None


def test_thermalservice_pixel_sections(read):
    t = parse_thermalservice(read("android_dumpsys_thermalservice_snapdragon730_pixel_class.txt"))
    assert t["status"] == 0
    assert len(t["cached"]) == 13 and len(t["current"]) == 13 and len(t["cooling_devices"]) == 4
    assert t["cooling_devices"][1] == {"name": "thermal-cpufreq-0", "value": 0.0, "type": 2}
    assert android_cpu_temperature(t) == pytest.approx(44.1)  # hottest CPU sensor of the current values


def test_thermalservice_tensor_bcl_values_are_not_temperatures(read):
    t = parse_thermalservice(read("android_dumpsys_thermalservice_tensor_pixel6_class_bcl_values.txt"))
    assert len(t["cached"]) == 40 and len(t["current"]) == 42 and t["cooling_devices"] == []
    not_temps = {x["name"] for x in t["cached"] if not x["is_temperature"]}
    assert {"ocp_gpu", "smpl_gm", "vdroop1", "batoilo", "soc"} <= not_temps
    assert all(x["value"] < 100 for x in t["cached"] if x["is_temperature"])
    assert android_cpu_temperature(t) == pytest.approx(27.000002)
    neg = [x for x in t["cached"] if x["name"] == "USB2-MINUS-QI"][0]
    assert neg["value"] == pytest.approx(-1.8060001) and neg["type_name"] == "unknown"


def test_thermalservice_shield_with_space_indent_and_trailing_spaces(read):
    t = parse_thermalservice(read("android_dumpsys_thermalservice_shield_tv_partial.txt"))
    assert [x["name"] for x in t["cached"]] == ["GPU", "CPU0", "CPU1", "CPU2", "CPU3"]
    assert t["current"] == [] and android_cpu_temperature(t) == 37.0


# ------------------------------------------------------------------------------ adb devices
def test_adb_devices_tcpip_and_unauthorized_with_only_transport_id(read):
    found = parse_adb_devices(read("adb_devices_l_tcpip_device_and_unauthorized.txt"))
    assert [(d["serial"], d["state"], d["transport_id"], d["tcpip"]) for d in found] == [
        ("192.168.34.13:5555", "device", 3, True), ("192.168.34.12:5555", "unauthorized", 1, True)]
    assert found[0]["model"] == "SM_T865" and found[0]["product"] == "gts6leea" and found[0]["device"] == "gts6l"
    assert found[1]["model"] is None


def test_adb_devices_usb_paths(read):
    linux = parse_adb_devices(read("adb_devices_l_usb_device_linux_usb_path.txt"))
    mac = parse_adb_devices(read("adb_devices_l_usb_device_macos_usb_id.txt"))
    assert [(d["serial"], d["usb"], d["model"], d["transport_id"]) for d in linux] == [
        ("n311r05e", "0-1.5", "M2012K11AC", 58)]
    assert [(d["serial"], d["usb"], d["device"], d["transport_id"]) for d in mac] == [
        ("UYT5T18414003349", "1114112X", "HWALP", 23)]
    assert not linux[0]["tcpip"]


def test_adb_devices_no_permissions_both_wordings(read):
    new = parse_adb_devices(read("adb_devices_no_permissions_new_wording.txt"))
    old = parse_adb_devices(read("adb_devices_no_permissions_legacy_question_marks.txt"))
    assert [(d["serial"], d["state"]) for d in new] == [("eb9f484b", "no permissions")]
    assert "plugdev" in new[0]["detail"] and new[0]["detail"].endswith("device.html]")
    assert [(d["serial"], d["state"]) for d in old] == [("????????????", "no permissions")]


def test_adb_devices_no_permissions_followed_by_l_fields():
    line = ("eb9f484b  no permissions (missing udev rules? user is in the plugdev group); "
            "see [http://developer.android.com/tools/device.html] usb:1-1 transport_id:2")
    [d] = parse_adb_devices("List of devices attached\n" + line + "\n")
    assert d["state"] == "no permissions" and d["usb"] == "1-1" and d["transport_id"] == 2
    assert d["detail"].endswith("device.html]")


def test_adb_devices_offline_and_noise_lines(read):
    assert [(d["serial"], d["state"]) for d in parse_adb_devices(read("adb_devices_offline.txt"))] == [
        ("cf264b8f", "offline")]
    found = parse_adb_devices(read("adb_devices_server_version_mismatch_unauthorized.txt"))
    assert [(d["serial"], d["state"]) for d in found] == [("LHS7N*************", "unauthorized")]


# ----------------------------------------------------------------------- cores, heat, collector
def _big_little() -> dict:
    freqs = [1804800] * 4 + [2419200] * 3 + [2841600]
    return {"cpus": [{"cpu": i, "max_khz": f, "online": True} for i, f in enumerate(freqs)], "notes": []}


def test_select_cores_big_little_all_and_lists():
    cond = _big_little()
    assert select_cores(cond, "big") == [7]
    assert select_cores(cond, "little") == [0, 1, 2, 3]
    assert select_cores(cond, "all") == list(range(8))
    assert select_cores(cond, "4-7") == [4, 5, 6, 7]
    assert select_cores(cond, "0, 2,5-6") == [0, 2, 5, 6]
    assert select_cores(cond, None) is None
    with pytest.raises(TopformerDeployError, match="no online CPU 8"):
        select_cores(cond, "8-9")
    with pytest.raises(TopformerDeployError, match="CPU list"):
        select_cores(cond, "4;reboot")
    with pytest.raises(TopformerDeployError, match="backwards"):
        parse_cpu_list("7-4")


def test_select_cores_without_cpufreq_does_not_pin_and_says_so():
    cond = {"cpus": [{"cpu": 0, "max_khz": None}, {"cpu": 1, "max_khz": None}], "notes": []}
    assert select_cores(cond, "big") is None
    assert any("not pinned" in n for n in cond["notes"])


def test_thermal_verdict_temperature_and_throttling():
    assert thermal_verdict({"temp_c": 81.0}, 80)["hot"]
    assert not is_hot({"temp_c": 79.0}, 80)
    assert not is_hot({"temp_c": None}, 80)
    now = {"temp_c": 40.0, "throttled": "0x50005", "throttled_flags": decode_throttled("0x50005")}
    verdict = thermal_verdict(now, 80)
    assert verdict["hot"] and "under-voltage-now" in verdict["reasons"][0]
    past = {"temp_c": 40.0, "throttled": "0x50000", "throttled_flags": decode_throttled("0x50000")}
    assert not is_hot(past, 80)  # it happened earlier, not now
    assert is_hot({"android_thermal_status": 2}, None)


def test_collect_conditions_on_this_machine():
    cond = collect_conditions(LocalTransport(), cores="all")
    assert cond["probe_ok"]
    assert cond["arch"] == platform.machine()
    assert len(cond["cpus"]) == os.cpu_count()
    assert all(isinstance(c["cpu"], int) and c["name"] for c in cond["cpus"])
    assert cond["cores"] == sorted(c["cpu"] for c in cond["cpus"] if c["online"] is not False)
    assert len(cond["loadavg"]) == 3 and all(x >= 0 for x in cond["loadavg"])
    assert cond["os"].startswith("Linux")


class CannedTransport(Transport):
    """Answers the collector's probe with a fixed text (what a board would print)."""

    name = kind = "canned"

    def __init__(self, text: str):
        self.text, self.scripts = text, []

    def shell(self, script, timeout=60, check=True):
        self.scripts.append((script, timeout, check))
        return RunResult(0, self.text, "")


def test_collect_conditions_from_a_raspberry_pi_answer(read):
    cpufreq = "\n".join(f"{i} 1800000 {600000 if i else 1800000} ondemand 1" for i in range(4))
    text = "\n".join([
        "@@arch", "aarch64", "@@os", "Linux 6.1.21-v8+", 'Raspbian GNU/Linux 11 (bullseye)', "@@hostname", "pi4",
        "@@dt_model", read("rpi4_proc_device_tree_model_no_newline.txt"),
        "@@cpuinfo", read("rpi4_proc_cpuinfo_aarch64_kernel6.1_bullseye.txt"), "@@cpufreq", cpufreq,
        "@@thermal", "51121 cpu-thermal", "@@vcgencmd", read("rpi3_vcgencmd_temp_throttled_0x50005.txt"),
        "@@getprop", "@@thermalservice", "@@loadavg", "0.52 0.58 0.59 1/180 1234", "@@taskset", "/usr/bin/taskset",
        "@@end"])
    canned = CannedTransport(text)
    cond = collect_conditions(canned, cores="big")
    assert canned.scripts[0][2] is False and canned.scripts[0][1] <= 30  # never fails, short timeout
    assert cond["model"] == "Raspberry Pi 4 Model B Rev 1.4" and cond["soc"] == "BCM2711"
    assert cond["arch"] == "aarch64" and cond["hostname"] == "pi4" and cond["serial"] == "10000000266dd214"
    assert [c["name"] for c in cond["cpus"]] == ["Cortex-A72"] * 4
    assert [c["cur_khz"] for c in cond["cpus"]] == [1800000, 600000, 600000, 600000]
    assert cond["cores"] == [0, 1, 2, 3]  # one cluster: big = all
    assert cond["thermal_zones"] == {"cpu-thermal": 51.121}
    assert cond["temp_c"] == 38.6  # vcgencmd wins over the thermal zone
    assert cond["throttled"] == "0x50005" and "throttled-now" in cond["throttled_flags"]
    assert cond["loadavg"] == [0.52, 0.58, 0.59]
    assert is_hot(cond, 80)


def test_collect_conditions_under_qemu_user_reports_the_host_cpuinfo():
    x86 = "".join(f"processor\t: {i}\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\n" for i in range(2))
    text = "\n".join(["@@arch", "aarch64", "@@os", "Linux 6.1", "@@cpuinfo", x86, "@@cpufreq", "@@thermal",
                      "@@vcgencmd", "@@getprop", "@@thermalservice", "@@loadavg", "1.0 1.0 1.0 1/1 1", "@@end"])
    cond = collect_conditions(CannedTransport(text), cores="big")
    assert cond["arch"] == "aarch64" and [c["name"] for c in cond["cpus"]] == ["AMD EPYC", "AMD EPYC"]
    assert cond["cores"] is None and cond["temp_c"] is None and cond["soc"] is None
    assert any("emulated" in n for n in cond["notes"]) and any("cpufreq" in n for n in cond["notes"])


def test_collect_conditions_from_an_android_answer(read):
    props = "[ro.product.model]: [Pixel 4a]\n[ro.board.platform]: [atoll]\n[ro.build.version.release]: [13]"
    cpufreq = "\n".join(f"{i} {1804800 if i < 6 else 2208000} 300000 schedutil 1" for i in range(8))
    text = "\n".join(["@@arch", "aarch64", "@@os", "Linux 4.14.302", "@@cpuinfo",
                      read("android_proc_cpuinfo_snapdragon865_sm8250.txt"), "@@cpufreq", cpufreq,
                      "@@thermal", "-", "@@vcgencmd", "@@getprop", props, "@@thermalservice",
                      read("android_dumpsys_thermalservice_snapdragon730_pixel_class.txt"), "@@loadavg",
                      "3.1 2.0 1.5 2/900 99", "@@end"])
    cond = collect_conditions(CannedTransport(text), cores="big")
    assert cond["model"] == "Pixel 4a" and cond["soc"] == "atoll" and cond["android"]["release"] == "13"
    assert cond["cores"] == [6, 7]
    assert cond["temp_c"] == pytest.approx(44.1)  # no readable thermal zone: thermalservice CPU sensors
    assert cond["android_thermal_status"] == 0 and cond["throttled"] is None
