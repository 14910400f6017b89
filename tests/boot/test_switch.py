from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from ka.boot.cmdline import BootOptions
from ka.boot.menus import grub_menu, ipxe_menu, pxelinux_menu
from ka.boot.nodes import NodeEntry
from ka.boot.pxe import PxeConfig, menu_files
from ka.boot.state import load_state, save_state, write_text
from ka.boot.switch import boot_states, set_boot
from ka.errors import UsageError
from needs import need

BOOT = BootOptions(host="10.9.0.1")
MAC1, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"


@pytest.fixture
def pxe(tmp_path: os.PathLike[str]) -> PxeConfig:
    """A state directory whose tree holds only the menus (no loader files needed)."""
    state = os.fspath(tmp_path)
    config = PxeConfig(interface="eth1", state_dir=state, tftp_root=os.path.join(state, "tftp"),
                       range=("10.9.0.100", "10.9.0.199"), bios="pxelinux", uefi="ipxe",
                       boot=BOOT, nodes=(NodeEntry(MAC1, "10.9.0.11", "n1"),
                                         NodeEntry(MAC2, None, "n2")))
    for f in menu_files(config, "ka", None):
        write_text(os.path.join(config.tftp_root, f.target), f.text)
    save_state(config)
    return config


def read(config: PxeConfig, target: str) -> str:
    with open(os.path.join(config.tftp_root, target)) as f:
        return f.read()


def test_set_node_by_name_writes_every_loader_menu(pxe: PxeConfig) -> None:
    set_boot(pxe, ["n1"], "local")
    assert read(pxe, "pxelinux.cfg/01-52-54-00-00-00-01") == pxelinux_menu(BOOT, "local")
    assert read(pxe, "ipxe/01-52-54-00-00-00-01.ipxe") == ipxe_menu(BOOT, "local")
    assert read(pxe, "pxelinux.cfg/default") == pxelinux_menu(BOOT, "ka"), "default unchanged"
    assert boot_states(pxe) == {MAC1: "local"}


def test_set_by_ip_and_mac_then_back(pxe: PxeConfig) -> None:
    set_boot(pxe, ["10.9.0.11", "52-54-00-00-00-02"], "local")
    assert boot_states(pxe) == {MAC1: "local", MAC2: "local"}
    set_boot(pxe, [MAC2], "ka")
    assert boot_states(pxe) == {MAC1: "local", MAC2: "ka"}


def test_grub_per_mac_file_name(tmp_path: os.PathLike[str]) -> None:
    config = PxeConfig(interface="e", state_dir=os.fspath(tmp_path),
                       tftp_root=os.path.join(tmp_path, "t"), range=("10.0.0.2", "10.0.0.3"),
                       bios="none", uefi="grub", boot=BOOT)
    set_boot(config, ["AA:BB:CC:DD:EE:FF"], "local")
    assert read(config, "grub/grub.cfg-01-aa-bb-cc-dd-ee-ff") == grub_menu(BOOT, "local")


def test_all_sets_default_and_drops_per_node_menus(pxe: PxeConfig) -> None:
    set_boot(pxe, ["n1", "n2"], "ka")
    new = set_boot(pxe, ["all"], "local")
    assert new.default == "local"
    assert load_state(pxe.state_dir).default == "local", "saved for later renders"
    assert boot_states(pxe) == {}
    assert sorted(os.listdir(os.path.join(pxe.tftp_root, "pxelinux.cfg"))) == ["default"]
    assert read(pxe, "pxelinux.cfg/default") == pxelinux_menu(BOOT, "local")
    assert read(pxe, "ipxe/default.ipxe") == ipxe_menu(BOOT, "local")


def test_unknown_node_changes_nothing(pxe: PxeConfig) -> None:
    with pytest.raises(UsageError, match="'n9' is not a MAC address"):
        set_boot(pxe, ["n1", "n9"], "local")
    assert boot_states(pxe) == {}


def test_hand_edited_menu_is_reported(pxe: PxeConfig) -> None:
    set_boot(pxe, ["n1"], "local")
    write_text(os.path.join(pxe.tftp_root, "pxelinux.cfg/01-52-54-00-00-00-01"), "DEFAULT x\n")
    with pytest.raises(UsageError, match="incomplete or were changed by hand"):
        boot_states(pxe)


def test_cli_set_and_show(pxe: PxeConfig, ka_boot: Callable[[list[str]], int],
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert ka_boot(["pxe", "set", "n2", "local", "--dir", pxe.state_dir]) == 0
    assert ka_boot(["pxe", "show", "--dir", pxe.state_dir]) == 0
    out = capsys.readouterr().out
    assert out.endswith("default: ka\n52:54:00:00:00:02  local  (n2)\n")
    assert ka_boot(["pxe", "set", "n2", "lokal", "--dir", pxe.state_dir]) == 2
    assert "neither 'ka' nor 'local'" in capsys.readouterr().out
    assert ka_boot(["pxe", "set", "all", "n1", "ka", "--dir", pxe.state_dir]) == 2


def test_set_without_configuration(tmp_path: os.PathLike[str],
                                   ka_boot: Callable[[list[str]], int],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert ka_boot(["pxe", "set", "all", "ka", "--dir", os.fspath(tmp_path)]) == 2
    assert "holds no ka PXE configuration" in capsys.readouterr().out


def test_config_again_keeps_node_entries_with_new_options(
        pxe: PxeConfig, ka_boot: Callable[[list[str]], int]) -> None:
    need("/usr/lib/ipxe/snponly.efi", "ipxe")
    set_boot(pxe, ["n1"], "local")
    set_boot(pxe, ["n2"], "ka")
    table = os.path.join(pxe.state_dir, "nodes")  # written by save_state
    assert ka_boot(["pxe", "config", "--interface", "eth1", "--range", "10.9.0.100,10.9.0.199",
                    "--dir", pxe.state_dir, "--tftp-root", pxe.tftp_root, "--bios", "none",
                    "--uefi", "ipxe", "--session", "second", "--nodes", table]) == 0
    new = load_state(pxe.state_dir)
    assert new.boot == BootOptions(session="second")
    assert boot_states(new) == {MAC1: "local", MAC2: "ka"}
    assert read(new, "ipxe/01-52-54-00-00-00-01.ipxe") == ipxe_menu(new.boot, "local")
    assert not os.path.exists(os.path.join(pxe.tftp_root, "pxelinux.cfg/01-52-54-00-00-00-01"))
