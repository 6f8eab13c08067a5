"""The parts of the local Telegram Bot API server; `bot.playground.bot_api_server.BotApiServer` joins them.

- `protocol`: parameters, Telegram's error shape and its text limits;
- `chats`: users, their private chats and the event log clients wait on;
- `updates`: the update queue, long polling and webhook delivery;
- `files`: stored files, getFile and downloads, Telegram's photo sizes;
- `methods`: the Bot API methods the bot calls;
- `people`: what the simulated users send and press.
"""
