"""How the caption transforms name a sample in their error messages."""

__all__ = ['describe_sample']


def describe_sample(results: dict) -> str:
    """Name a pipeline item by what identifies it in the annotation.

    Args:
        results (dict): The item as it travels through the pipeline.

    Returns:
        str: e.g. ``"sample 12 (img_path='imgs/a.jpg', image_id=3, caption 1)"``.

    Example:
        >>> describe_sample(dict(sample_idx=0, image_id=2, caption_idx=1))
        'sample 0 (image_id=2, caption 1)'
    """
    parts = []
    if results.get('img_path') is not None:
        parts.append(f'img_path={results["img_path"]!r}')
    if results.get('image_id') is not None:
        parts.append(f'image_id={results["image_id"]}')
    if results.get('caption_idx') is not None:
        parts.append(f'caption {results["caption_idx"]}')
    head = f'sample {results["sample_idx"]}' if 'sample_idx' in results else 'item'
    return f'{head} ({", ".join(parts)})' if parts else head
