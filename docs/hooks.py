"""mkdocs hook: the table of config keys in the guide, made from the options each piece of lth declares."""


def on_page_markdown(markdown, page, config, files):
    if "<!-- config-keys -->" not in markdown:
        return markdown
    from lth.harness.config import keys_table

    return markdown.replace("<!-- config-keys -->", keys_table())
