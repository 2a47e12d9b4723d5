"""DVC stage report: Markdown and CSV tables comparing every defined experiment, written into
metrics/report/ from metrics/<exp>.json alone."""

from cnnlab.cli import run_stage
from cnnlab.config import load_params
from cnnlab.report.tables import REPORT_DIR, write_report

if __name__ == "__main__":
    run_stage(lambda: write_report(load_params(), REPORT_DIR))
