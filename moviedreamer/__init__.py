"""MovieDreamer: hierarchical story-to-movie generation.

The Python API, imported on first use (so `import moviedreamer` stays cheap)::

    from moviedreamer import MovieDreamerPipeline, load_story

- `MovieDreamerPipeline` (pipeline/movie.py): `from_pretrained(profile)`, then call it on a story and an output folder.
- `MovieResult` (pipeline/result.py): what a call returns: the output's paths and frames read back on demand.
- `load_story` (script/load.py): a story .yaml → `LoadedStory`, every problem reported with file:line:col.
"""

__version__ = "0.1.0"

__all__ = ["MovieDreamerPipeline", "MovieResult", "__version__", "load_story"]


def __getattr__(name):
    if name == "MovieDreamerPipeline":
        from moviedreamer.pipeline.movie import MovieDreamerPipeline

        return MovieDreamerPipeline
    if name == "MovieResult":
        from moviedreamer.pipeline.result import MovieResult

        return MovieResult
    if name == "load_story":
        from moviedreamer.script.load import load_story

        return load_story
    raise AttributeError(f"module 'moviedreamer' has no attribute {name!r}")
