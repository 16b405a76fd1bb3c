import open_clip

from mst_clipiqa.reward.backbones.tokenizer import openai_clip_tokenizer

PROMPTS = ["a cat doing karaoke", "Donald Trump playing in the RAIN, realistic style!!",
           "naïve café — 3.14 über  spaces", "emoji 🙂 test", "it's 1999's   don't\tI'll", "", "x " * 100]


def test_transformers_tokenizer_matches_openai_clip_ids():
    hf = openai_clip_tokenizer()
    reference = open_clip.tokenize(PROMPTS)  # OpenAI's tokenizer, padded / truncated to 77
    ours = hf(PROMPTS, padding="max_length", truncation=True, max_length=77)["input_ids"]
    for ref_row, our_row in zip(reference.tolist(), ours):
        n = sum(1 for t in ref_row if t != 0)
        assert our_row[:n] == ref_row[:n]
    assert len(hf) == 49408
