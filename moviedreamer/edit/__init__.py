"""Restyling finished movies by an instruction (issue #39): an InstructPix2Pix-style editor (model.py) sampled with
Fairy's anchor-based cross-frame attention (anchors.py, sampler.py), toy-world edit pairs and instructions for
training it (pairs.py, instructions.py), and the movie-level loop (restyle.py). Python API:

    from moviedreamer.edit import restyle_movie
    restyle_movie("out/lost_kite", "make it snowy", "out/lost_kite_snow")
"""

from moviedreamer.edit.restyle import RestyleResult, restyle_movie

__all__ = ["RestyleResult", "restyle_movie"]
