// The pelt extension's client: starts `peltc lsp` (stdio) for .pelt files.
"use strict";
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("peltc");
  const [command, ...args] = config.get("server.command", ["peltc", "lsp"]);
  const serverOptions = { command, args };
  const clientOptions = {
    documentSelector: [{ scheme: "file", language: "pelt" }, { scheme: "untitled", language: "pelt" }],
    initializationOptions: { model: config.get("model") || null },
    synchronize: { configurationSection: "peltc" },
  };
  client = new LanguageClient("peltc", "peltc language server", serverOptions, clientOptions);
  context.subscriptions.push(
    vscode.commands.registerCommand("peltc.restartServer", () => client && client.restart())
  );
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
