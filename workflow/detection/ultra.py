"""Run ultralytics fully offline. Import this module before ``ultralytics``.

Settings that guarantee no network access (checked by logging socket calls):
  YOLO_CONFIG_DIR   a private settings folder (never the user's ~/.config)
  YOLO_OFFLINE=1    is_online() is False: no events, no hub, no GitHub asset lookups
  YOLO_AUTOINSTALL=0  never runs pip for a missing requirement
  <YOLO_CONFIG_DIR>/Ultralytics/Arial.ttf  a local TTF, so check_font() finds the font and does not
                    look it up on github.com (it does so even with YOLO_OFFLINE=1 and plots=False)
  amp=False         the AMP check on CUDA would download a checkpoint
  pretrained=False  models are built from yaml files; no weights are ever downloaded
The one download is the dataset the pack stage is asked for (detection.data.download, when
detection.data.path is missing: workflow/detection/source.py).
"""
import os
import shutil
from pathlib import Path

OFFLINE_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
CONFIG_DIR = Path(os.environ.get("EDGE_VISION_YOLO_CONFIG_DIR", Path.home() / ".cache" / "edge-vision-yolo"))


def setup_offline(config_dir=CONFIG_DIR):
    """Set the environment and the local font; idempotent. Returns the settings applied (for provenance)."""
    config_dir = Path(config_dir)
    font = config_dir / "Ultralytics" / "Arial.ttf"
    if not font.exists():
        import matplotlib

        font.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
    return {"YOLO_CONFIG_DIR": os.environ["YOLO_CONFIG_DIR"], **OFFLINE_ENV, "font": str(font),
            "amp": False, "pretrained": False}


OFFLINE_SETTINGS = setup_offline()
