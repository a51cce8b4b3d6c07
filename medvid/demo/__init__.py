"""``medvid demo``: the whole pipeline on the embedded echocardiograms (see ``pipeline``)."""

from medvid.demo.pipeline import DemoConfig, configure, main, run_demo

__all__ = ["DemoConfig", "configure", "main", "run_demo"]
