"""DVC stage: fetch COCO's annotation archive (md5-checked) and take out the instances file."""

from cnnlab.cli import run_stage
from cnnlab.config import load_params
from cnnlab.data.sources import download_coco

if __name__ == "__main__":
    run_stage(lambda: download_coco(load_params()))
