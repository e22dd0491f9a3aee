"""Extraction (`maple-data extract`): probe, frames, audio, subtitles, ASR, the extraction job."""
