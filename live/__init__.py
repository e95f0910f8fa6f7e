"""execal live: the monitor loop (sources, online model, detectors, recalibration) over the numerical
core. It composes areas (impact with the live state), so it lives outside `models/`."""
