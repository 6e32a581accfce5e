"""Common TinyML boards and their memory budgets, each row citing where the figures come from.

RAM is the on-chip SRAM the TFLM arena can live in; flash is the memory the model
array (weights) is read from. External PSRAM/SDRAM/QSPI chips some boards carry
are left out unless they are the only place the model can go (noted per row).
board_fit is the one rule every command (hub report --board, hub sweep, hub optimize --board) judges
a board by, as a device would: RAM holds the arena and the TFLM runtime's own objects, flash the model
array and the runtime's code (interpreter core and the kernels of the ops the model uses), both measured
(hub.knowledge.kernel_flash). KB = 1024 bytes.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from math import ceil
from typing import Any

from hub.errors import InputError
from hub.knowledge import kernel_flash

KB = 1024
MB = 1024 * KB

# Share of RAM / flash reserved for the application (stack, heap, drivers; TFLM's own code and RAM are counted).
# None is assumed: the whole budget is offered to the model, and the report says so.
APP_RAM_RESERVE = 0.0
APP_FLASH_RESERVE = 0.0
ASSUMPTION = ("the whole RAM is offered to the TFLM arena and runtime objects and the whole flash to the model "
              "and TFLM's code (interpreter core + the kernels of the model's ops, measured for a Cortex-M4F "
              "with GCC -Os); leave room for your application and stack")


@dataclass(frozen=True)
class Board:
    key: str
    name: str
    mcu: str
    ram_bytes: int
    flash_bytes: int
    source: str
    note: str = ""
    # RAM the TFLM runtime takes beside the arena (interpreter and resolver objects, the C library's data)
    runtime_ram_bytes: int = kernel_flash.RUNTIME_RAM_BYTES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BOARDS: tuple[Board, ...] = (
    Board("nano33ble", "Arduino Nano 33 BLE Sense", "nRF52840 (Cortex-M4F, 64 MHz)", 256 * KB, 1 * MB,
          "https://docs.arduino.cc/hardware/nano-33-ble-sense/"),
    Board("pico", "Raspberry Pi Pico", "RP2040 (2x Cortex-M0+, 133 MHz)", 264 * KB, 2 * MB,
          "https://www.raspberrypi.com/documentation/microcontrollers/pico-series.html",
          "flash is the board's 2 MB QSPI chip (XIP)"),
    Board("pico2", "Raspberry Pi Pico 2", "RP2350 (2x Cortex-M33, 150 MHz)", 520 * KB, 4 * MB,
          "https://www.raspberrypi.com/documentation/microcontrollers/pico-series.html",
          "flash is the board's 4 MB QSPI chip (XIP)"),
    Board("esp32s3", "ESP32-S3-DevKitC-1 (N8)", "ESP32-S3 (2x Xtensa LX7, 240 MHz)", 512 * KB, 8 * MB,
          "https://docs.espressif.com/projects/esp-dev-kits/en/latest/esp32s3/esp32-s3-devkitc-1/user_guide.html",
          "512 KB internal SRAM; module flash 8 MB; R2/R8 variants add PSRAM, not counted"),
    Board("stm32f746-disco", "STM32F746G Discovery", "STM32F746NG (Cortex-M7, 216 MHz)", 320 * KB, 1 * MB,
          "https://www.st.com/en/evaluation-tools/32f746gdiscovery.html",
          "internal memories; the board adds 8 MB SDRAM and 16 MB QSPI flash, not counted"),
    Board("nucleo-l4r5zi", "STM32L4R5 Nucleo (NUCLEO-L4R5ZI)", "STM32L4R5ZI (Cortex-M4F, 120 MHz)", 640 * KB, 2 * MB,
          "https://www.st.com/en/evaluation-tools/nucleo-l4r5zi.html"),
    Board("nrf52840dk", "nRF52840 DK", "nRF52840 (Cortex-M4F, 64 MHz)", 256 * KB, 1 * MB,
          "https://www.nordicsemi.com/Products/Development-hardware/nRF52840-DK"),
    Board("sparkfun-edge", "SparkFun Edge", "Ambiq Apollo3 Blue (Cortex-M4F, 48/96 MHz)", 384 * KB, 1 * MB,
          "https://www.sparkfun.com/products/15170"),
    Board("portenta-h7", "Arduino Portenta H7", "STM32H747XI (Cortex-M7 + M4)", 1 * MB, 2 * MB,
          "https://docs.arduino.cc/hardware/portenta-h7/",
          "internal memories; the board adds 8 MB SDRAM and 16 MB QSPI flash, not counted"),
    Board("corstone-300", "Arm Corstone-300 FVP", "Cortex-M55 (+ Ethos-U55), simulated", 2 * MB, 256 * MB,
          "https://developer.arm.com/documentation/100966/1126/Arm--Corstone-SSE-300-FVP/Memory-map-overview-for-Corstone-SSE-300",
          "RAM is the 2 MiB SSE-300 SRAM; there is no flash: the model sits in the 256 MiB DDR region"),
    Board("bluepill", "STM32F103C8 \"Blue Pill\"", "STM32F103C8 (Cortex-M3, 72 MHz)", 20 * KB, 64 * KB,
          "https://www.st.com/en/microcontrollers-microprocessors/stm32f103c8.html",
          "the MCU's datasheet figures; the Blue Pill is a generic (non-ST) board around it"),
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def find_board(name: str) -> Board:
    """A board by key or name, ignoring case and punctuation; InputError listing the known ones."""
    wanted = _slug(name)
    for board in BOARDS:
        if wanted in (_slug(board.key), _slug(board.name)):
            return board
    matches = [b for b in BOARDS if wanted and wanted in _slug(b.name)]
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"unknown board {name!r}: choose one of {', '.join(b.key for b in BOARDS)}",
                     hint="or give --ram KB and --flash KB")


def board_list() -> str:
    """One line per board, as `hub report --board list` prints them."""
    rows = [f"{b.key:<16} {b.name:<34} RAM {b.ram_bytes // KB:>6} KB  flash {b.flash_bytes // KB:>7} KB  {b.source}"
            for b in BOARDS]
    return "\n".join(rows)


def custom_board(ram_kb: float | None, flash_kb: float | None) -> Board:
    """A budget given with --ram/--flash (KB); a missing one is not checked."""
    for flag, value in (("--ram", ram_kb), ("--flash", flash_kb)):
        if value is not None and value <= 0:
            raise InputError(f"{flag} must be a positive number of KB, got {value:g}")
    ram = round(ram_kb * KB) if ram_kb is not None else 0
    flash = round(flash_kb * KB) if flash_kb is not None else 0
    return Board("custom", "custom budget", "", ram, flash, "--ram/--flash")


def fit(need_bytes: int | None, budget_bytes: int, reserve: float = 0.0) -> dict[str, Any]:
    """How `need_bytes` compares with a budget: fits, or does not fit by N KB (rounded up)."""
    if not budget_bytes or need_bytes is None:
        return {"need_bytes": need_bytes, "budget_bytes": budget_bytes or None, "margin_bytes": None,
                "fits": None, "verdict": "not checked"}
    available = int(budget_bytes * (1 - reserve))
    margin = available - need_bytes
    verdict = f"fits ({_amount(margin, ceil_kb=False)} spare)" if margin >= 0 else f"does not fit by {_amount(-margin)}"
    return {"need_bytes": need_bytes, "budget_bytes": available, "margin_bytes": margin, "fits": margin >= 0,
            "verdict": verdict}


def _amount(n: int, ceil_kb: bool = True) -> str:
    """Bytes below 1 KB, else whole KB: rounded up for a shortfall, down for spare room."""
    if n < KB:
        return f"{n} B"
    return f"{(ceil(n / KB) if ceil_kb else n // KB):,} KB"


@dataclass(frozen=True)
class BoardFit:
    """Whether a model fits a board as a firmware running it on TFLM needs it, and what was counted.

    RAM needed = the arena + the runtime's objects (interpreter, an op resolver sized for the model's
    distinct ops, the C library's data); flash needed = the model array + the runtime's code (interpreter
    core and each kernel the model's ops register, code they share counted once). The application's own
    code, stack and data are not counted. A need or a budget left unknown is "not checked"."""

    board: str  # Board.key
    fits: bool | None  # None: neither RAM nor flash could be checked
    ram_needed: int | None
    ram_available: int | None
    flash_needed: int | None
    flash_available: int | None
    arena_bytes: int | None
    runtime_ram_bytes: int  # beside the arena: interpreter and resolver objects, C library data
    model_bytes: int | None  # the flatbuffer
    kernel_code_bytes: int  # interpreter core + the kernels of `ops`
    ops: tuple[str, ...]  # distinct op keys (hub.knowledge.kernel_flash.op_key)
    estimated_ops: tuple[str, ...]  # ops without a measurement, charged kernel_flash.FALLBACK_KERNEL_BYTES

    @property
    def ram(self) -> dict[str, Any]:
        return fit(self.ram_needed, self.ram_available or 0)

    @property
    def flash(self) -> dict[str, Any]:
        return fit(self.flash_needed, self.flash_available or 0)

    def counted(self) -> dict[str, Any]:
        return {"arena_bytes": self.arena_bytes, "runtime_ram_bytes": self.runtime_ram_bytes,
                "model_bytes": self.model_bytes, "kernel_code_bytes": self.kernel_code_bytes,
                "ops": list(self.ops), "estimated_ops": list(self.estimated_ops)}

    def to_dict(self) -> dict[str, Any]:
        """{"ram", "flash", "fits"} as report.json has always had them (needs now include the runtime),
        and "counted": what the needs add up."""
        return {"ram": self.ram, "flash": self.flash, "fits": self.fits, "counted": self.counted()}


def board_fit(board: Board, arena_bytes: int | None, model_bytes: int | None, ops: Iterable[str]) -> BoardFit:
    """The board-fit rule: the arena and runtime objects against the board's RAM, the model array and the
    runtime's code for `ops` (op names or keys, repeats count once) against its flash."""
    distinct = sorted({kernel_flash.op_key(op) for op in ops})
    runtime_ram = board.runtime_ram_bytes + kernel_flash.resolver_ram_bytes(len(distinct))
    code, estimated = kernel_flash.firmware_flash_bytes(distinct)
    ram_needed = None if arena_bytes is None else arena_bytes + runtime_ram
    flash_needed = None if model_bytes is None else model_bytes + code
    ram = fit(ram_needed, board.ram_bytes, APP_RAM_RESERVE)
    flash = fit(flash_needed, board.flash_bytes, APP_FLASH_RESERVE)
    checked = [r["fits"] for r in (ram, flash) if r["fits"] is not None]
    return BoardFit(board.key, all(checked) if checked else None, ram_needed, ram["budget_bytes"], flash_needed,
                    flash["budget_bytes"], arena_bytes, runtime_ram, model_bytes, code, tuple(distinct),
                    tuple(estimated))
