"""relulab.machine: the CPU's model name from /proc/cpuinfo, or platform's fallback."""

from __future__ import annotations

import platform

from relulab import machine


def test_the_model_name_is_read_from_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
    )
    monkeypatch.setattr(machine, "CPUINFO", cpuinfo)
    assert machine.cpu_model() == "AMD EPYC 7B13"


def test_without_cpuinfo_platform_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "missing")
    assert machine.cpu_model() == (platform.processor() or platform.machine())
