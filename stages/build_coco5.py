"""DVC stage: select, fetch and resize the COCO 5-class 64x64 dataset with pycocotools."""

from cnnlab.cli import run_stage
from cnnlab.config import load_params
from cnnlab.data.coco_build import build_coco5_stage

if __name__ == "__main__":
    run_stage(lambda: build_coco5_stage(load_params()))
