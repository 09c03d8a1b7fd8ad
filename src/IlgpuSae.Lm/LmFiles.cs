using System.Text.Json.Nodes;
using IlgpuSae.IO;

namespace IlgpuSae.Lm;

/// <summary>
/// Writes weights in the Hugging Face layouts the loader reads (config.json + model.safetensors), for
/// tests, random-weight smoke runs of real shapes, and converting models built in code.
/// </summary>
public static class LmFiles
{
    /// <summary>Writes a <c>GPT2LMHeadModel</c> folder (tied embeddings; Conv1D weights [in, out]).</summary>
    public static void SaveGpt2(string folder, LmConfig c, LmWeights w)
    {
        if (c.Architecture != LmArchitecture.Gpt2 || w.PositionEmbedding is null)
        {
            throw new ArgumentException("SaveGpt2 needs a GPT-2 config and position embeddings.");
        }

        Directory.CreateDirectory(folder);
        int d = c.DModel,
            m = c.DMlp;
        var tensors = new List<TensorToWrite>
        {
            new("wte.weight", [c.VocabSize, d], w.TokenEmbedding),
            new("wpe.weight", [c.ContextLength, d], w.PositionEmbedding),
            new("ln_f.weight", [d], w.FinalLnWeight),
            new("ln_f.bias", [d], w.FinalLnBias),
        };
        for (int l = 0; l < c.Layers; l++)
        {
            var b = w.Blocks[l];
            string h = $"h.{l}.";
            tensors.AddRange([
                new(h + "ln_1.weight", [d], b.Ln1Weight),
                new(h + "ln_1.bias", [d], b.Ln1Bias),
                new(h + "attn.c_attn.weight", [d, 3 * d], b.QkvWeight),
                new(h + "attn.c_attn.bias", [3 * d], b.QkvBias),
                new(h + "attn.c_proj.weight", [d, d], b.OutWeight),
                new(h + "attn.c_proj.bias", [d], b.OutBias),
                new(h + "ln_2.weight", [d], b.Ln2Weight),
                new(h + "ln_2.bias", [d], b.Ln2Bias),
                new(h + "mlp.c_fc.weight", [d, m], b.MlpInWeight),
                new(h + "mlp.c_fc.bias", [m], b.MlpInBias),
                new(h + "mlp.c_proj.weight", [m, d], b.MlpOutWeight),
                new(h + "mlp.c_proj.bias", [d], b.MlpOutBias),
            ]);
        }

        if (!ReferenceEquals(w.Unembedding, w.TokenEmbedding))
        {
            tensors.Add(new("lm_head.weight", [c.VocabSize, d], w.Unembedding));
        }

        SafetensorsWriter.Write(
            Path.Combine(folder, "model.safetensors"),
            tensors,
            new Dictionary<string, string> { ["format"] = "pt" }
        );
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("GPT2LMHeadModel"),
            ["model_type"] = "gpt2",
            ["vocab_size"] = c.VocabSize,
            ["n_positions"] = c.ContextLength,
            ["n_ctx"] = c.ContextLength,
            ["n_embd"] = d,
            ["n_layer"] = c.Layers,
            ["n_head"] = c.Heads,
            ["n_inner"] = m,
            ["activation_function"] = c.Activation switch
            {
                LmActivation.GeluErf => "gelu",
                LmActivation.Relu => "relu",
                _ => "gelu_new",
            },
            ["layer_norm_epsilon"] = c.LayerNormEpsilon,
            ["tie_word_embeddings"] = ReferenceEquals(w.Unembedding, w.TokenEmbedding),
            ["bos_token_id"] = c.BosTokenId,
            ["eos_token_id"] = c.EosTokenId,
        };
        AtomicFile.WriteAllText(
            Path.Combine(folder, "config.json"),
            config.ToJsonString(new() { WriteIndented = true })
        );
    }

    /// <summary>Writes a <c>GPTNeoXForCausalLM</c> folder (Linear weights [out, in], per-head interleaved
    /// Q/K/V rows).</summary>
    public static void SaveNeoX(string folder, LmConfig c, LmWeights w)
    {
        if (c.Architecture != LmArchitecture.GptNeoX)
        {
            throw new ArgumentException("SaveNeoX needs a GPT-NeoX config.");
        }

        Directory.CreateDirectory(folder);
        int d = c.DModel,
            m = c.DMlp,
            dh = c.HeadDim;
        var tensors = new List<TensorToWrite>
        {
            new("gpt_neox.embed_in.weight", [c.VocabSize, d], w.TokenEmbedding),
            new("gpt_neox.final_layer_norm.weight", [d], w.FinalLnWeight),
            new("gpt_neox.final_layer_norm.bias", [d], w.FinalLnBias),
            new("embed_out.weight", [c.VocabSize, d], w.Unembedding),
        };
        for (int l = 0; l < c.Layers; l++)
        {
            var b = w.Blocks[l];
            var qkv = new float[3 * d * d];
            var qkvBias = new float[3 * d];
            for (int head = 0; head < c.Heads; head++)
            {
                for (int part = 0; part < 3; part++)
                {
                    for (int j = 0; j < dh; j++)
                    {
                        int row = head * 3 * dh + part * dh + j,
                            col = part * d + head * dh + j;
                        qkvBias[row] = b.QkvBias[col];
                        for (int i = 0; i < d; i++)
                        {
                            qkv[row * d + i] = b.QkvWeight[i * 3 * d + col];
                        }
                    }
                }
            }

            string h = $"gpt_neox.layers.{l}.";
            tensors.AddRange([
                new(h + "input_layernorm.weight", [d], b.Ln1Weight),
                new(h + "input_layernorm.bias", [d], b.Ln1Bias),
                new(h + "attention.query_key_value.weight", [3 * d, d], qkv),
                new(h + "attention.query_key_value.bias", [3 * d], qkvBias),
                new(h + "attention.dense.weight", [d, d], LmWeights.Transpose(b.OutWeight, d, d)),
                new(h + "attention.dense.bias", [d], b.OutBias),
                new(h + "post_attention_layernorm.weight", [d], b.Ln2Weight),
                new(h + "post_attention_layernorm.bias", [d], b.Ln2Bias),
                new(h + "mlp.dense_h_to_4h.weight", [m, d], LmWeights.Transpose(b.MlpInWeight, d, m)),
                new(h + "mlp.dense_h_to_4h.bias", [m], b.MlpInBias),
                new(h + "mlp.dense_4h_to_h.weight", [d, m], LmWeights.Transpose(b.MlpOutWeight, m, d)),
                new(h + "mlp.dense_4h_to_h.bias", [d], b.MlpOutBias),
            ]);
        }

        SafetensorsWriter.Write(
            Path.Combine(folder, "model.safetensors"),
            tensors,
            new Dictionary<string, string> { ["format"] = "pt" }
        );
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("GPTNeoXForCausalLM"),
            ["model_type"] = "gpt_neox",
            ["vocab_size"] = c.VocabSize,
            ["max_position_embeddings"] = c.ContextLength,
            ["hidden_size"] = d,
            ["num_hidden_layers"] = c.Layers,
            ["num_attention_heads"] = c.Heads,
            ["intermediate_size"] = m,
            ["hidden_act"] = c.Activation switch
            {
                LmActivation.GeluTanh => "gelu_new",
                LmActivation.Relu => "relu",
                _ => "gelu",
            },
            ["layer_norm_eps"] = c.LayerNormEpsilon,
            ["rotary_pct"] = c.RotaryFraction,
            ["rotary_emb_base"] = c.RotaryBase,
            ["use_parallel_residual"] = c.ParallelResidual,
            ["tie_word_embeddings"] = false,
            ["bos_token_id"] = c.BosTokenId,
            ["eos_token_id"] = c.EosTokenId,
        };
        AtomicFile.WriteAllText(
            Path.Combine(folder, "config.json"),
            config.ToJsonString(new() { WriteIndented = true })
        );
    }
}
