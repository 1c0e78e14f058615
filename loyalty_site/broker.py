"""The broker that needs no server: kombu's filesystem transport, for one machine."""

from pathlib import Path


def filesystem_transport_options(folder: Path) -> dict[str, object]:
    """Return kombu transport options that keep every queue file under `folder`, creating it."""
    options: dict[str, object] = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }
    for name in ("queue", "processed", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return options
