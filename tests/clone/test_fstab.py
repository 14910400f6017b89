"""fstab and boot-configuration rewrites: every reference form, nothing dropped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ka.clone.fstab import IdentityMap, fstab_entries, rewrite_fstab, substitute_ids

OLD_ROOT = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
NEW_ROOT = "9f0c3a52-7d1e-4c2b-a4b7-5e8d2f6c1a90"
OLD_SWAP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
NEW_SWAP = "0e5f1c9a-3b7d-4e2f-8a6c-1d9b7e4f2a35"
OLD_PART = "c0ffee00-0000-4000-8000-000000000001"
NEW_PART = "deadbeef-0000-4000-8000-000000000002"
IDS = IdentityMap(
    uuids={OLD_ROOT: NEW_ROOT, OLD_SWAP: NEW_SWAP, "ABCD-1234": "9F3E-77A1"},
    partuuids={OLD_PART: NEW_PART},
    labels={"oldvar": "newvar"},
    devices={"/dev/sda3": "11111111-2222-4333-8444-555555555555"},
    commented=frozenset({"/dev/sdb1", "77777777-7777-4777-8777-777777777777"}),
)


def test_every_reference_form_is_rewritten() -> None:
    text = (
        f"UUID={OLD_ROOT} / ext4 errors=remount-ro 0 1\n"
        f'UUID="{OLD_SWAP}" none swap sw 0 0\n'
        f"PARTUUID={OLD_PART} /home ext4 defaults 0 2\n"
        "LABEL=oldvar /var xfs defaults 0 2\n"
        "/dev/sda3 /srv ext4 defaults 0 2\n"
        f"/dev/disk/by-uuid/{OLD_ROOT} /mnt/again ext4 bind 0 0\n"
        "UUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n"
    )
    result = rewrite_fstab(text, IDS)
    lines = result.text.splitlines()
    assert lines[0] == f"UUID={NEW_ROOT} / ext4 errors=remount-ro 0 1"
    assert lines[1] == f"UUID={NEW_SWAP} none swap sw 0 0"
    assert lines[2] == f"PARTUUID={NEW_PART} /home ext4 defaults 0 2"
    assert lines[3] == "LABEL=newvar /var xfs defaults 0 2"
    assert lines[4] == "UUID=11111111-2222-4333-8444-555555555555 /srv ext4 defaults 0 2"
    assert lines[5] == f"/dev/disk/by-uuid/{NEW_ROOT} /mnt/again ext4 bind 0 0"
    assert lines[6] == "UUID=9F3E-77A1 /boot/efi vfat umask=0077 0 1"
    assert len(result.changed) == 7 and not result.kept


def test_uuid_match_ignores_case() -> None:
    result = rewrite_fstab(f"UUID={OLD_ROOT.upper()} / ext4 defaults 0 1\n", IDS)
    assert result.text == f"UUID={NEW_ROOT} / ext4 defaults 0 1\n"


def test_comments_blank_lines_spacing_and_foreign_entries_are_kept() -> None:
    text = (
        "# /etc/fstab: static file system information.\n"
        "\n"
        f"  UUID={OLD_ROOT}\t/\text4\tdefaults\t0\t1   # root\n"
        "tmpfs /tmp tmpfs nosuid,nodev 0 0\n"
        "server:/export /net nfs4 ro 0 0\n"
        "/srv/data /data none bind 0 0\n"
        "proc /proc proc defaults 0 0\n"
        "UUID=00000000-0000-4000-8000-00000000beef /unknown ext4 defaults 0 2\n"
    )
    result = rewrite_fstab(text, IDS)
    out = result.text.splitlines()
    assert out[0] == "# /etc/fstab: static file system information."
    assert out[1] == ""
    assert out[2] == f"  UUID={NEW_ROOT}\t/\text4\tdefaults\t0\t1   # root"
    assert out[3:] == text.splitlines()[3:]
    assert result.kept == ("tmpfs", "server:/export", "/srv/data", "proc",
                           "UUID=00000000-0000-4000-8000-00000000beef")


def test_entries_of_excluded_disks_are_commented_not_dropped() -> None:
    text = (
        "/dev/sdb1 /scratch ext4 defaults 0 2\n"
        "UUID=77777777-7777-4777-8777-777777777777 /big xfs defaults 0 2\n"
    )
    result = rewrite_fstab(text, IDS, disabled_note="disk left out")
    assert result.text == (
        "# ka: disk left out: /dev/sdb1 /scratch ext4 defaults 0 2\n"
        "# ka: disk left out: UUID=77777777-7777-4777-8777-777777777777 /big xfs defaults 0 2\n"
    )
    assert result.disabled == ("/dev/sdb1", "UUID=77777777-7777-4777-8777-777777777777")


def test_line_endings_and_missing_final_newline_are_kept() -> None:
    text = f"UUID={OLD_ROOT} / ext4 defaults 0 1\r\ntmpfs /tmp tmpfs defaults 0 0"
    result = rewrite_fstab(text, IDS)
    assert result.text == f"UUID={NEW_ROOT} / ext4 defaults 0 1\r\ntmpfs /tmp tmpfs defaults 0 0"


def test_fstab_entries_decode_octal_escapes() -> None:
    text = "# c\nLABEL=x /mnt/my\\040disk ext4 defaults 0 2\nbroken-line\n"
    assert fstab_entries(text) == [("LABEL=x", "/mnt/my disk", "ext4")]


lines = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
             max_size=60),
    max_size=20,
)


@given(lines)
def test_no_mapping_means_no_change(body: list[str]) -> None:
    text = "\n".join(body) + "\n"
    assert rewrite_fstab(text, IdentityMap()).text == text


@given(lines)
def test_line_count_never_changes(body: list[str]) -> None:
    text = "\n".join(body) + "\n"
    assert len(rewrite_fstab(text, IDS).text.splitlines()) == len(text.splitlines())


def test_substitute_ids_in_grub_cfg() -> None:
    cfg = (
        f"search --no-floppy --fs-uuid --set=root {OLD_ROOT}\n"
        f"linux /vmlinuz root=UUID={OLD_ROOT} ro resume=UUID={OLD_SWAP}\n"
        f"linux /vmlinuz root=PARTUUID={OLD_PART.upper()} ro\n"
        f"# not a match: x{OLD_ROOT} {OLD_ROOT}0\n"
    )
    new, count = substitute_ids(cfg, IDS.id_pairs())
    assert count == 4
    assert new.splitlines()[0].endswith(NEW_ROOT)
    assert f"root=UUID={NEW_ROOT}" in new and f"resume=UUID={NEW_SWAP}" in new
    assert f"root=PARTUUID={NEW_PART}" in new
    assert new.splitlines()[3] == cfg.splitlines()[3]


def test_substitution_is_one_pass() -> None:
    a, b, c = ("aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002",
               "cccccccc-0000-4000-8000-000000000003")
    new, count = substitute_ids(f"{a} {b}", {a: b, b: c})
    assert (new, count) == (f"{b} {c}", 2)


def test_id_pairs_leave_out_unchanged_and_empty_ids() -> None:
    ids = IdentityMap(uuids={OLD_ROOT: OLD_ROOT.upper(), "": "x", OLD_SWAP: NEW_SWAP})
    assert ids.id_pairs() == {OLD_SWAP: NEW_SWAP}
