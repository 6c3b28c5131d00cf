"""Stage implementations that live in the astrosage package (training, merge, publish)."""
