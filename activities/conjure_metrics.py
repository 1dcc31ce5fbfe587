"""Log metrics from inside a Conjure run. Importable in every run, nothing to install.

    from conjure_metrics import send_metric
    send_metric("loss", 0.25, step=3)

    from conjure_metrics import KerasCallback
    model.fit(x, y, callbacks=[KerasCallback()])   # logs keras/<metric> at each epoch end

The protocol underneath is plain text, usable from any language or the shell:
append one line per value to the file named by $CONJURE_METRICS_FILE, either a
JSON object `{"name": "loss", "value": 0.25, "step": 3}` ("step" optional) or
`NAME VALUE [STEP]` separated by spaces:

    echo "loss 0.25 3" >> "$CONJURE_METRICS_FILE"

Outside a run (no $CONJURE_METRICS_FILE), send_metric does nothing.
This file has no dependency beyond the standard library and runs on Python 3.6+.
"""

import json
import math
import os
import time

__all__ = ["send_metric", "KerasCallback"]  # noqa: F822 (KerasCallback: module __getattr__)


def send_metric(name, value, step=None):
    """Log one value of metric `name` (a number); `step` is an optional integer."""
    path = os.environ.get("CONJURE_METRICS_FILE")
    if not path:
        return
    name = str(name)
    if not name or any(ch.isspace() for ch in name):
        raise ValueError(f"metric name must be non-empty and without spaces: {name!r}")
    if isinstance(value, bool):
        value = int(value)
    value = float(value)
    record = {
        "name": name,
        "value": value if math.isfinite(value) else str(value),
        "time": time.time(),
    }
    if step is not None:
        record["step"] = int(step)
    line = (json.dumps(record) + "\n").encode()
    # One write of one line with O_APPEND: lines from several processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _keras_callback_base():
    for module in ("keras", "tensorflow.keras", "tf_keras"):
        try:
            mod = __import__(module, fromlist=["callbacks"])
            return mod.callbacks.Callback
        except Exception:
            continue
    return object


_keras_class = None


def _make_keras_callback():
    base = _keras_callback_base()

    class KerasCallback(base):  # type: ignore[valid-type,misc]
        """Logs every metric Keras reports at the end of each epoch as keras/<metric>,
        with step = the epoch number as Keras displays it (1 for the first epoch)."""

        def __init__(self, prefix="keras/"):
            if base is not object:
                super().__init__()
            self.prefix = prefix

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                try:
                    send_metric(self.prefix + key, float(value), step=int(epoch) + 1)
                except (TypeError, ValueError):
                    continue

        if base is object:  # no Keras here: the rest of its callback interface, as no-ops

            def set_model(self, model):
                self.model = model

            def set_params(self, params):
                self.params = params

            def __getattr__(self, name):
                if name.startswith("on_"):
                    return lambda *args, **kwargs: None
                raise AttributeError(name)

    return KerasCallback


def __getattr__(name):  # PEP 562: build the Keras class only when it is asked for
    global _keras_class
    if name == "KerasCallback":
        if _keras_class is None:
            _keras_class = _make_keras_callback()
        return _keras_class
    raise AttributeError(name)
